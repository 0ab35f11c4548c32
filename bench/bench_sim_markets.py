"""Page every market of a 425,000-market sim through ``GET /markets`` (limit 1000) and print the figures.

Runs the sim as a separate process (``python -m kalshictl sim``) so its memory is measured alone. One line per figure.
Exit status is non-zero only if the run was invalid (wrong market count, duplicates, or an HTTP error).

    python bench/bench_sim_markets.py [--markets 425000] [--limit 1000] [--rate 0]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import subprocess
import sys
import time

import aiohttp
import orjson


def rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` in MiB (Linux /proc)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


async def page_all(rest_url: str, limit: int) -> tuple[int, int, int, float, float]:
    """Returns (markets, unique tickers, pages, seconds, seconds spent in the first page)."""
    tickers: set[str] = set()
    count = pages = 0
    cursor = ""
    first = 0.0
    async with aiohttp.ClientSession() as http:
        start = time.perf_counter()
        while True:
            params = {"limit": str(limit)}
            if cursor:
                params["cursor"] = cursor
            async with http.get(f"{rest_url}/markets", params=params) as r:
                if r.status != 200:
                    raise RuntimeError(f"HTTP {r.status}: {(await r.read())[:200]!r}")
                body = orjson.loads(await r.read())
            pages += 1
            if pages == 1:
                first = time.perf_counter() - start
            count += len(body["markets"])
            tickers.update(m["ticker"] for m in body["markets"])
            cursor = body["cursor"]
            if not cursor:
                break
        return count, len(tickers), pages, time.perf_counter() - start, first


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--markets", type=int, default=425_000)
    ap.add_argument("--limit", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=0.0, help="sim activity while paging (events/s)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    cmd = [sys.executable, "-m", "kalshictl", "sim", "--markets", str(args.markets), "--seed", str(args.seed)]
    cmd += ["--port", "0", "--rate", str(args.rate), "--rest-tier", "unlimited"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    rest_url = None
    assert proc.stdout is not None
    for line in proc.stdout:
        m = re.match(r"REST (\S+)", line)
        if m:
            rest_url = m.group(1)
            break
    if rest_url is None:
        print("sim did not start", file=sys.stderr)
        return 2
    startup = time.perf_counter() - t0
    rss_start = rss_mb(proc.pid)
    try:
        count, unique, pages, seconds, first = asyncio.run(page_all(rest_url, args.limit))
        rss_end = rss_mb(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    print(f"sim_markets {args.markets}")
    print(f"sim_startup_s {startup:.2f}")
    print(f"markets_paged {count} (unique {unique}) in {pages} pages of {args.limit}")
    print(f"paging_time_s {seconds:.2f}")
    print(f"pages_per_s {pages / seconds:.1f}")
    print(f"markets_per_s {count / seconds:.0f}")
    print(f"first_page_ms {first * 1000:.1f}")
    print(f"sim_rss_mb_after_start {rss_start:.1f}")
    print(f"sim_rss_mb_after_paging {rss_end:.1f}")
    expected_pages = -(-args.markets // args.limit)
    if count != args.markets or unique != args.markets or pages != expected_pages:
        print(f"INVALID: expected {args.markets} markets in {expected_pages} pages", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
