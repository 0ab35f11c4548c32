"""The gatherer at full scale (docs/gatherer.md "Sharding = subscriptions") with the shipped deploy config's
websocket section (no bench-only override).

425,000 markets listed, 6 global + 144 order-book connections as ``deploy/config/gatherer.yaml`` lays them out. The
local exchange runs as its own process (its memory is not counted); the gatherer runs here against a throwaway
PostgreSQL cluster. Prints: markets placed / unplaced against the computed capacity, RSS, time to healthy (every
recordable market subscribed and its first snapshot in), then injects a seq gap (one order-book frame lost on the
wire, found by the seq probe) and prints how long the markets of that subscription stayed untrusted (p50/p99).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from pathlib import Path

import httpx

from kalshictl.config import parse_settings
from kalshictl.db.embedded import PostgresCluster, free_port
from kalshictl.local.processes import ManagedProcess, kalshictl_argv


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


SHIPPED = Path(__file__).resolve().parents[1] / "deploy" / "config" / "gatherer.yaml"


async def run(markets: int, dsn: str, port: int) -> int:
    import yaml

    from kalshictl.gatherer.service import Gatherer

    shipped = yaml.safe_load(SHIPPED.read_text())["gatherer"]["websocket"]
    base = f"http://127.0.0.1:{port}"
    settings = parse_settings(
        {
            "gatherer": {
                "name": "bench",
                "database": {"dsn": dsn},
                "exchange": {
                    "allow_insecure": True,  # the local exchange
                    "rest_url": f"{base}/trade-api/v2",
                    "ws_url": f"ws://127.0.0.1:{port}/trade-api/ws/v2",
                    "requests_per_second": 1000.0,
                },
                "websocket": shipped,  # exactly the shipped section
                "snapshot_poller": {"enabled": False},
                "http": {"host": "127.0.0.1", "port": 0},
            }
        },
        environ={},
    ).gatherer
    w = settings.websocket
    before = rss_mb()
    g = Gatherer(settings, progress=False)
    task = asyncio.create_task(g.run())
    t0 = time.monotonic()
    try:
        if not await g.wait_ready(900):
            print("invalid run: the gatherer did not become ready")
            return 1
        deadline = time.monotonic() + 900
        while True:
            report = await g.health()
            cov = report.components.get("coverage", {})
            if report.status == "healthy" and cov.get("resyncing") == 0:
                break
            if time.monotonic() > deadline:
                print(f"invalid run: not healthy: {report.as_dict()}")
                return 1
            await asyncio.sleep(0.5)
        ready_s = time.monotonic() - t0
        await g.writers.flush_all(300)
        after = rss_mb()
        registered = len(g.registry)
        # inject a seq gap: lose order-book frames on the wire until exactly one delta is lost, then probe
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            await http.post("/_sim/faults", content="skip_seq=1.0")
            lost = 0
            for _ in range(200):
                emitted = (await http.post("/_sim/step", params={"n": 1})).json()
                stats = (await http.get("/_sim/stats")).json()
                lost = int((stats.get("faults") or {}).get("skip_seq", 0))
                if lost:
                    break
            await http.post("/_sim/faults", content="")
        if not lost:
            print(f"invalid run: no frame was lost ({emitted})")
            return 1
        g.router.stats.resync_us.clear()
        for conn in g.manager.book_conns:
            g.router.probe(conn)
        gap_t = time.monotonic()
        while g.router.stats.tail_gaps == 0 or g.router.sync.awaiting:
            if time.monotonic() - gap_t > 120:
                found, waiting = g.router.stats.tail_gaps, len(g.router.sync.awaiting)
                print(f"invalid run: gap not found/resynced ({found}, {waiting})")
                return 1
            await asyncio.sleep(0.05)
        resynced = len(g.router.stats.resync_us)
        p50, p99 = g.router.resync_quantile(0.5), g.router.resync_quantile(0.99)
        status = await g.status()
    finally:
        g.request_stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 60)
    print(
        f"layout (shipped): {w.orderbook_connections} x {w.subscriptions_per_connection} x "
        f"{w.markets_per_subscription} = capacity {cov['capacity']:,}; {registered:,} markets registered, "
        f"{cov['recordable']:,} recordable, {cov['placed']:,} placed, {cov['unplaced']:,} unplaced, "
        f"{status['coverage']['subscriptions']:,} subscriptions"
    )
    print(
        f"gatherer RSS: {after:,.0f} MB (+{after - before:,.0f} MB over the idle process's {before:,.0f} MB); "
        f"time to healthy (every book trusted): {ready_s:.1f} s"
    )
    print(
        f"injected seq gap ({lost} frame lost): {resynced:,} markets re-snapshotted, untrusted p50 {p50:.3f} s, "
        f"p99 {p99:.3f} s; max commands/min on a connection {status['connections']['commands_last_minute_max']}"
    )
    return 0 if cov["unplaced"] == 0 else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--markets", type=int, default=425_000)
    args = ap.parse_args()
    port = free_port()
    logdir = tempfile.TemporaryDirectory(prefix="kalshictl-bench-")  # removed at exit (the sim's log lives there)
    sim = ManagedProcess(
        "sim",
        kalshictl_argv(
            "sim",
            "--markets",
            str(args.markets),
            "--port",
            str(port),
            "--rate",
            "0",
            "--rest-tier",
            "unlimited",
            "--paused",
        ),
        Path(logdir.name) / "sim.log",
    )
    with PostgresCluster() as cluster:
        cluster.create_database("g")
        dsn = cluster.dsn("g")
        import psycopg

        from kalshictl.db.migrate import migrate

        with psycopg.connect(dsn, autocommit=True) as conn:
            migrate(conn, "gatherer")
        sim.start()
        try:
            deadline = time.monotonic() + 120
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"http://127.0.0.1:{port}/trade-api/v2/exchange/status").status_code == 200:
                        break
                if time.monotonic() > deadline or not sim.running:
                    print("invalid run: the local exchange did not start\n" + sim.log_tail())
                    return 1
                time.sleep(0.2)
            return asyncio.run(run(args.markets, dsn, port))
        finally:
            sim.terminate()
            logdir.cleanup()


if __name__ == "__main__":
    sys.exit(main())
