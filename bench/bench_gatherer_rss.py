"""Gatherer memory at the seed's scale: 425,000 markets registered, 6 global + 144 order-book WebSocket connections.

The local exchange runs as its own process (so its memory is not counted); the gatherer runs here against a
throwaway PostgreSQL cluster, loads the registry, opens all 150 connections, subscribes every open market and stores
the initial snapshots. Prints the gatherer's RSS before start and once every connection is subscribed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time

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


async def run(markets: int, book_conns: int, global_conns: int, dsn: str, port: int) -> int:
    from kalshictl.gatherer.service import Gatherer

    rest = f"http://127.0.0.1:{port}/trade-api/v2"
    settings = parse_settings(
        {
            "gatherer": {
                "name": "bench",
                "database": {"dsn": dsn},
                "exchange": {
                    "rest_url": rest,
                    "ws_url": f"ws://127.0.0.1:{port}/trade-api/ws/v2",
                    "requests_per_second": 1000.0,
                },
                "websocket": {
                    "global_connections": global_conns,
                    "orderbook_connections": book_conns,
                    "markets_per_subscription": 10_000,
                },
                "snapshot_poller": {"enabled": False},
                "http": {"host": "127.0.0.1", "port": 0},
            }
        },
        environ={},
    ).gatherer
    before = rss_mb()
    g = Gatherer(settings, progress=False)
    task = asyncio.create_task(g.run())
    t0 = time.monotonic()
    try:
        if not await g.wait_ready(900):
            print("invalid run: the gatherer did not become ready")
            return 1
        deadline = time.monotonic() + 600
        while g.manager.healthy_count() < g.manager.target:
            if time.monotonic() > deadline:
                print(f"invalid run: {g.manager.healthy_count()}/{g.manager.target} connections subscribed")
                return 1
            await asyncio.sleep(0.5)
        ready_s = time.monotonic() - t0
        await g.writers.flush_all(300)
        registered = len(g.registry)
        subscribed = sum(len(c.markets) for c in g.manager.book_conns)
        after = rss_mb()
    finally:
        g.request_stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 60)
    if registered == 0 or subscribed < registered * 0.95:
        print(f"invalid run: {registered} markets registered, {subscribed} subscribed")
        return 1
    print(
        f"gatherer RSS: {after:,.0f} MB with {registered:,} markets registered and {subscribed:,} subscribed over "
        f"{book_conns} order-book + {global_conns} global connections (+{after - before:,.0f} MB over the idle "
        f"process's {before:,.0f} MB)"
    )
    print(
        f"time to healthy (registry at 1000 req/s, {book_conns + global_conns} connections subscribed, initial "
        f"snapshots stored): {ready_s:.1f} s"
    )
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--markets", type=int, default=425_000)
    ap.add_argument("--orderbook-connections", type=int, default=144)
    ap.add_argument("--global-connections", type=int, default=6)
    args = ap.parse_args()
    port = free_port()
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
        __import__("pathlib").Path("/tmp/kalshictl-bench-sim.log"),
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
            return asyncio.run(run(args.markets, args.orderbook_connections, args.global_connections, dsn, port))
        finally:
            sim.terminate()


if __name__ == "__main__":
    sys.exit(main())
