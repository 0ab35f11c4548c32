"""RSS with 425,000 markets in the registry, and the time to load them through rate-limited pagination."""

from __future__ import annotations

import asyncio
import resource
import sys

from kalshictl.gatherer.registry import MarketRegistry
from kalshictl.kalshi.rest import KalshiRest
from kalshictl.sim import SimConfig, SimExchange

N = 425_000
RPS = 20.0  # Kalshi Basic tier read budget


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def main() -> int:
    async with SimExchange(SimConfig(markets=N, seed=1, rate=0, record_ground_truth=False)) as ex:
        rest = KalshiRest(ex.rest_url, requests_per_second=RPS)
        reg = MarketRegistry()
        before = rss_mb()
        await reg.load(rest, [])
        after = rss_mb()
        await rest.close()
    if len(reg) != N:
        print(f"invalid run: loaded {len(reg)} of {N} markets")
        return 1
    print(
        f"registry: {len(reg):,} markets loaded in {reg.load_seconds:.1f}s over {reg.pages} pages at {RPS:g} req/s "
        f"(rate limited, 429-aware)"
    )
    print(f"registry RSS: +{after - before:.0f} MB for {len(reg):,} markets (process RSS {after:.0f} MB incl. the sim)")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
