"""Fixtures for gatherer tests: a migrated gatherer database, settings pointing at a local exchange, GT compare."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

from kalshictl.config import GathererSettings, parse_settings
from kalshictl.db.migrate import migrate

if TYPE_CHECKING:
    from kalshictl.gatherer.service import Gatherer
    from kalshictl.sim import SimExchange


def migrate_gatherer(dsn: str) -> None:
    """Apply the gatherer schema (plain partitioned flavour) to a database."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate(conn, "gatherer", flavor="partitioned")


@pytest.fixture
def gatherer_dsn(pg_cluster, fresh_db) -> str:
    """A fresh, migrated gatherer database (superuser DSN on the shared cluster)."""
    dsn = pg_cluster.dsn(fresh_db)
    migrate_gatherer(dsn)
    return dsn


def make_settings(dsn: str, rest_url: str, ws_url: str, **over: Any) -> GathererSettings:
    """Gatherer settings for tests: few connections, fast flushes, free http port."""
    ws = {
        "global_connections": 3,
        "orderbook_connections": 3,
        "ping_timeout_s": 5.0,
        "reconnect_min_s": 0.05,
        "reconnect_max_s": 0.5,
    }
    ws.update(over.pop("websocket", {}))
    data = {
        "gatherer": {
            "name": over.pop("name", "gatherer-1"),
            "database": {"dsn": dsn},
            "exchange": {"rest_url": rest_url, "ws_url": ws_url, "requests_per_second": 200.0, "allow_insecure": True},
            "websocket": ws,
            "writer": {"batch_rows": 2000, "flush_ms": 50, **over.pop("writer", {})},
            "snapshot_poller": {"interval_s": 2.0, **over.pop("snapshot_poller", {})},
            "http": {"host": "127.0.0.1", "port": 0},
            "market_status": ["unopened", "open", "paused", "closed"],
            "shutdown_timeout_s": 15.0,
            **over,
        }
    }
    return parse_settings(data, environ={}).gatherer  # type: ignore[return-value]


async def until(cond: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``cond`` (sync or async) until truthy or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def running_gatherer(
    dsn: str, ex: SimExchange, *, all_subscribed: bool = True, **over: Any
) -> AsyncIterator[Gatherer]:
    """A gatherer (test settings, ``over`` as in :func:`make_settings`) on the local exchange ``ex``: ready, and with
    every connection subscribed unless ``all_subscribed`` is false; stopped gracefully (within 30 s) on leaving."""
    from kalshictl.gatherer.service import Gatherer

    g = Gatherer(make_settings(dsn, ex.rest_url, ex.ws_url, **over), progress=False)
    task = asyncio.create_task(g.run())
    try:
        assert await g.wait_ready(30)
        if all_subscribed:
            await until(lambda: g.manager.healthy_count() == g.manager.target, 15, "all connections subscribed")
        yield g
    finally:
        g.request_stop()
        await asyncio.wait_for(task, 30)


# ----- ground truth comparison ---------------------------------------------------------------------------------

SIDE = {"yes": True, "no": False}


def gt_keys(records: list[dict]) -> dict[str, Counter]:
    """Ground-truth records as multisets of comparable tuples per kind."""
    out: dict[str, Counter] = {k: Counter() for k in ("trade", "delta", "ticker", "lifecycle")}
    for r in records:
        k = r["kind"]
        if k == "trade":
            out[k][(r["trade_id"], r["ticker"], r["exchange_ts"], r["price"], r["size"], SIDE[r["taker_side"]])] += 1
        elif k == "delta":
            key = (r["ticker"], r["exchange_ts"], SIDE[r["side"]], r["price"], r["size_delta"], r["occurrence"])
            out[k][key] += 1
        elif k == "ticker":
            out[k][
                (
                    r["ticker"],
                    r["exchange_ts"],
                    r["yes_bid"],
                    r["yes_ask"],
                    r["last_price"],
                    r["volume"],
                    r["open_interest"],
                )
            ] += 1
        elif k == "lifecycle":  # a lifecycle message has no time of its own: stored at its receive time
            out[k][(r["ticker"], r["event_type"])] += 1
    return out


DB_QUERIES = {
    "trade": "SELECT trade_id::text, ticker, exchange_ts, price, size, taker_side FROM trades",
    "delta": "SELECT ticker, exchange_ts, side, price, size_delta, occurrence FROM orderbook_deltas",
    # ticker updates only: the REST re-anchor snapshots after a window (source 'rest') are observations, not events
    "ticker": "SELECT ticker, exchange_ts, yes_bid, yes_ask, last_price, volume, open_interest FROM tickers"
    " WHERE source = 'ws'",
    "lifecycle": "SELECT ticker, event_type FROM lifecycle_events",
}


def extra_missing(kind: str, stored: Counter, truth: Counter) -> tuple[Counter, Counter]:
    """Rows stored but not emitted, and emitted but not stored. A lifecycle message received twice (a duplicated
    frame) is stored at two receive times; the comparison cannot tell it from a repeat, so lifecycle rows compare as
    sets."""
    if kind == "lifecycle":
        return Counter(set(stored) - set(truth)), Counter(set(truth) - set(stored))
    return stored - truth, truth - stored


def db_keys(dsn: str) -> dict[str, Counter]:
    """Stored rows as multisets of the same tuples."""
    with psycopg.connect(dsn) as conn:
        return {k: Counter(tuple(r) for r in conn.execute(q).fetchall()) for k, q in DB_QUERIES.items()}


def db_gaps(dsn: str) -> list[tuple]:
    """Gap windows (one row per window) as ``(tickers | None, reason, from_ts, to_ts, channel)``."""
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT tickers, reason, from_ts, to_ts, channel FROM sequence_gaps").fetchall()


KIND_CHANNEL = {"trade": "trade", "delta": "orderbook_delta", "ticker": "ticker", "lifecycle": "market_lifecycle_v2"}


def covered(kind: str, key: tuple, gaps: list[tuple]) -> bool:
    """Whether a missing event lies inside a recorded coverage window (of its channel, or of every channel)."""
    ticker = key[1] if kind == "trade" else key[0]
    for g_tickers, _reason, lo, hi, channel in gaps:
        if channel not in (KIND_CHANNEL[kind], "*"):
            continue
        if g_tickers is not None and ticker not in g_tickers:
            continue
        if kind == "lifecycle":  # no exchange time of its own to place it: any window of its channel
            if g_tickers is None:
                return True
            continue
        ts = key[2] if kind == "trade" else key[1]
        if lo <= ts and (hi is None or ts <= hi):
            return True
    return False


@pytest.fixture
def sim_factory() -> Iterator[Callable[..., Any]]:
    """Create SimExchange objects (started by the test with ``async with``)."""
    from kalshictl.sim import SimConfig, SimExchange

    def make(**kw: Any) -> Any:
        return SimExchange(SimConfig(**kw))

    yield make


async def probe_all(g) -> None:
    """Probe every order-book sid's seq and wait for every answer (probes pass the command bucket first)."""
    before = g.router.stats.probe_replies
    sent = sum(g.router.probe(conn) for conn in g.manager.book_conns)
    await until(lambda: g.router.stats.probe_replies >= before + sent, 20, "seq probe answers")
