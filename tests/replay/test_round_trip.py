"""The round trip: a recorded demo period replayed into a second, fresh pipeline (3 gatherers + deduplicator pointed at
`kalshictl replay`) yields the same production for that period — trades, deltas, ticker updates, lifecycle events —
and the same books at the end."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import httpx
import psycopg
import pytest

from kalshictl.db.embedded import free_port
from kalshictl.local.pipeline import LocalPipeline, LocalPipelineConfig
from kalshictl.local.processes import Supervisor, kalshictl_argv
from kalshictl.replay.server import ReplayOptions, ReplayServer
from kalshictl.research.book_query import book_at

pytestmark = pytest.mark.slow

QUERIES = {
    "trades": "SELECT trade_id, exchange_ts, ticker, price, size, taker_side FROM trades",
    "orderbook_deltas": "SELECT ticker, exchange_ts, side, price, size_delta FROM orderbook_deltas",
    "tickers": "SELECT ticker, exchange_ts, yes_bid, yes_ask, last_price, volume, open_interest FROM tickers "
    "WHERE source = 'ws'",
    # lifecycle messages carry no time of their own (their exchange_ts is a receive time): compared by content
    "lifecycle_events": "SELECT ticker, event_type, digest FROM lifecycle_events",
}


def _rows(dsn: str, table: str, from_us: int, to_us: int) -> Counter:
    where = " AND " if "WHERE" in QUERIES[table] else " WHERE "
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(f"{QUERIES[table]}{where}exchange_ts > %s AND exchange_ts <= %s", (from_us, to_us))
        return Counter(rows.fetchall())


async def _wait_health(http: httpx.AsyncClient, url: str, proc, wanted: set[str], timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.running, proc.log_tail()
        try:
            if (await http.get(url)).json().get("status") in wanted:
                return
        except (httpx.HTTPError, ValueError):
            pass
        await asyncio.sleep(0.5)
    raise AssertionError(f"{url} not {wanted} in {timeout}s")


@pytest.mark.timeout(900)
async def test_replayed_into_a_fresh_pipeline_the_period_is_recorded_again_equal(recorded, tmp_path):
    from_us, to_us = recorded.first_ts - 1, recorded.last_ts
    opts = ReplayOptions(from_us, to_us, speed=1.0, port=free_port(), wait_clients=0)
    supervisor = Supervisor(tmp_path / "logs")
    async with ReplayServer(recorded.db, opts) as rs:
        pipe = LocalPipeline(
            LocalPipelineConfig(base_dir=tmp_path, rest_url=rs.rest_url, ws_url=rs.ws_url, requests_per_second=50.0)
        )
        try:
            await asyncio.to_thread(pipe.setup)
            names = [pipe.gatherer_name(i) for i in range(pipe.config.gatherers)]
            for name in [*names, "deduplicator"]:
                argv = ("gather", "run") if name != "deduplicator" else ("dedup", "run")
                supervisor.add(name, kalshictl_argv(*argv, "--config", str(pipe.config_paths[name]))).start()
            ports = pipe.http_ports()
            async with httpx.AsyncClient(timeout=2.0) as http:
                for i, name in enumerate(names):
                    await _wait_health(http, f"http://127.0.0.1:{ports[i]}/health", supervisor[name], {"healthy"})
                dedup_url = f"http://127.0.0.1:{ports[-1]}/health"
                await _wait_health(http, dedup_url, supervisor["deduplicator"], {"healthy", "degraded"})
                await http.post(f"{rs.base_url}/replay/start")  # every gatherer subscribed: the clock runs
                await rs.done()
                await asyncio.sleep(2.0)  # the gatherers' last batches reach their databases (flush interval)
            for name in names:
                assert await asyncio.to_thread(supervisor[name].terminate, 30) == 0
            last = None
            for _ in range(30):  # the deduplicator merges until production stops growing
                counts = {t: sum(_rows(pipe.production_dsn(), t, from_us, to_us).values()) for t in QUERIES}
                if counts == last:
                    break
                last = counts
                await asyncio.sleep(1.0)
            assert await asyncio.to_thread(supervisor["deduplicator"].terminate, 30) == 0
            for table in QUERIES:
                first = _rows(recorded.admin_dsn, table, from_us, to_us)
                second = _rows(pipe.production_dsn(), table, from_us, to_us)
                assert first, table
                assert second == first, (table, len(first), len(second), list((first - second).items())[:3])
            for ticker in recorded.busiest(from_us, to_us, 5):
                with psycopg.connect(recorded.admin_dsn) as a, psycopg.connect(pipe.production_dsn()) as b:
                    assert book_at(b, ticker, to_us).book == book_at(a, ticker, to_us).book, ticker
        finally:
            supervisor.kill_all()
            pipe.destroy()
