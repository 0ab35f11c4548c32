"""The round trip: a recorded demo period replayed into a second, fresh pipeline (3 gatherers + deduplicator pointed at
`kalshictl replay`) yields the same production for that period — trades, deltas, ticker updates, lifecycle events —
and the same books at the end."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

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


def _rows(dsn: str, table: str, from_us: int, to_us: int, shift: int = 0) -> Counter:
    """A table's rows in (from_us, to_us] of the recorded period; ``shift``: the rows were recorded from a replay whose
    message times were moved by ``shift`` µs (they are moved back)."""
    where = " AND " if "WHERE" in QUERIES[table] else " WHERE "
    with psycopg.connect(dsn) as conn:
        if table == "lifecycle_events":  # receive times (untimed messages) or the message's own time
            rows = conn.execute(
                f"{QUERIES[table]}{where}(exchange_ts > %s AND exchange_ts <= %s OR exchange_ts > %s AND "
                "exchange_ts <= %s)",
                (from_us, to_us, from_us + shift, to_us + shift + 5_000_000 if shift else to_us),
            )
            return Counter(rows.fetchall())
        rows = conn.execute(
            f"{QUERIES[table]}{where}exchange_ts > %s AND exchange_ts <= %s", (from_us + shift, to_us + shift)
        )
        return Counter((r[0], r[1] - shift, *r[2:]) for r in rows.fetchall())


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
async def test_replayed_into_a_fresh_pipeline_the_period_is_recorded_again_equal(recorded):
    base = Path(tempfile.mkdtemp(prefix="kalshictl-replay-rt-"))  # PostgreSQL's OS user must traverse it
    from_us, to_us = recorded.first_ts - 1, recorded.last_ts
    opts = ReplayOptions(from_us, to_us, speed=1.0, port=free_port(), wait_clients=0, shift_to_now=True)
    supervisor = Supervisor(base / "logs")
    async with ReplayServer(recorded.db, opts) as rs:
        pipe = LocalPipeline(
            LocalPipelineConfig(base_dir=base, rest_url=rs.rest_url, ws_url=rs.ws_url, requests_per_second=50.0)
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
                shift = rs.feed.shift_us
                assert shift > 0 and shift % 1000 == 0
                await asyncio.sleep(2.0)  # the gatherers' last batches reach their databases (flush interval)
            for name in names:
                assert await asyncio.to_thread(supervisor[name].terminate, 30) == 0
            history: list[dict] = []
            for _ in range(90):  # the deduplicator merges until production has every table and stops growing
                counts = {t: sum(_rows(pipe.production_dsn(), t, from_us, to_us, shift).values()) for t in QUERIES}
                history.append(counts)
                if all(history[-1].values()) and len(history) >= 4 and history[-4] == history[-1]:
                    break
                await asyncio.sleep(1.0)
            assert await asyncio.to_thread(supervisor["deduplicator"].terminate, 30) == 0
            for table in QUERIES:
                first = _rows(recorded.admin_dsn, table, from_us, to_us)
                second = _rows(pipe.production_dsn(), table, from_us, to_us, shift)
                assert first, table
                assert second == first, (table, len(first), len(second), list((first - second).items())[:3])
            for ticker in recorded.busiest(from_us, to_us, 5):
                with psycopg.connect(recorded.admin_dsn) as a, psycopg.connect(pipe.production_dsn()) as b:
                    assert book_at(b, ticker, to_us + shift).book == book_at(a, ticker, to_us).book, ticker
        finally:
            supervisor.kill_all()
            pipe.destroy()
            shutil.rmtree(base, ignore_errors=True)
