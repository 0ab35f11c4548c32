"""Lifecycle key (docs/gatherer.md "Decisions and deviations"): time-less lifecycle messages seen by three gatherers
become exactly one production row per event, a market's second ``deactivated`` minutes later is kept, and no time is
in the future."""

from __future__ import annotations

import asyncio
import time

import orjson
import psycopg

from kalshictl.dedup.loops import SyncLoop
from kalshictl.dedup.metrics import DedupMetrics
from kalshictl.gatherer.gaps import GapLog
from kalshictl.gatherer.metrics import GathererMetrics
from kalshictl.gatherer.router import Router
from kalshictl.gatherer.writers import BatchWriter, WriterSet
from kalshictl.kalshi.lifecycle_key import digest, event_time
from kalshictl.schema import EVENT_TABLES, LIFECYCLE
from tests.dedup.conftest import DedupEnv


async def _no_gap_db() -> psycopg.AsyncConnection:
    raise RuntimeError("these routers keep their gap windows in memory")


def _frame(event_type: str, **extra) -> bytes:
    msg = {"market_ticker": "KX-MKT-1", "event_type": event_type, **extra}
    return orjson.dumps({"type": "market_lifecycle_v2", "sid": 3, "msg": msg})


def test_event_time_is_never_in_the_future() -> None:
    rx = 1_800_000_000_000_000
    assert event_time(None, rx) == rx and event_time(0, rx) == rx
    assert event_time(rx - 5, rx) == rx - 5
    assert event_time(rx + 86_400_000_000, rx) == rx  # e.g. a close_ts borrowed as a time: capped at receipt
    assert digest("deactivated", "A", {"b": 1, "a": 2}) == digest("deactivated", "A", {"a": 2, "b": 1})
    assert digest("deactivated", "A", {}) != digest("deactivated", "B", {})


async def _three_gatherers(
    dedup_env: DedupEnv, events: list[tuple[bytes, int]], seen: list[set[int]] | None = None
) -> list[tuple]:
    """Each gatherer's router handles the frames (gatherer i receives each one i x 250 ms later; only the events
    ``seen[i]`` when given); the deduplicator merges all three; returns production's lifecycle rows of the market."""
    for i, g in enumerate(dedup_env.gatherers):

        def connect(db=g.db):
            return psycopg.AsyncConnection.connect(dedup_env.prod_cluster.dsn(db))

        writers = WriterSet({s.name: BatchWriter(s, connect, flush_ms=10) for s in EVENT_TABLES})
        writers.start()
        router = Router(g.name, writers, GathererMetrics(g.name), GapLog(g.name, _no_gap_db))
        for k, (frame, rx) in enumerate(events):
            if seen is None or k in seen[i]:
                router.handle(None, frame, rx + i * 250_000)
        assert router.stats.parse_errors == 0
        assert await writers.stop(10)
        await router.gaplog.stop()
    await _merge(dedup_env)
    with dedup_env.prod() as c:
        return c.execute(
            "SELECT event_type, exchange_ts, gatherer FROM lifecycle_events WHERE ticker = 'KX-MKT-1'"
            " ORDER BY exchange_ts"
        ).fetchall()


async def _merge(dedup_env: DedupEnv) -> None:
    s = dedup_env.settings()
    metrics = DedupMetrics()
    for src in s.gatherers:
        loop = SyncLoop(src, LIFECYCLE, s.production, s.sync, metrics, asyncio.Event(), [])
        try:
            await loop.step()
        finally:
            await loop.close_gatherer()
            await loop.close_production()


async def test_three_gatherers_store_three_lifecycle_events(dedup_env: DedupEnv) -> None:
    now = time.time_ns() // 1000
    base = now - 600_000_000  # ten minutes ago
    # two deactivated 3 minutes apart, one metadata_updated in between; none carries a time of its own
    rows = await _three_gatherers(
        dedup_env,
        [
            (_frame("deactivated", is_deactivated=True), base),
            (_frame("metadata_updated", additional_metadata={"title": "new title"}), base + 60_000_000),
            (_frame("deactivated", is_deactivated=True), base + 180_000_000),
        ],
    )
    assert [r[0] for r in rows] == ["deactivated", "metadata_updated", "deactivated"], rows
    assert all(r[1] <= time.time_ns() // 1000 for r in rows)  # none in the future
    assert [r[1] for r in rows] == [base, base + 60_000_000, base + 180_000_000]  # the first gatherer's receipt
    with dedup_env.gatherers[1].conn() as c:  # each gatherer holds its own three copies
        assert c.execute("SELECT count(*) FROM lifecycle_events").fetchone()[0] == 3


async def test_identical_repeats_in_a_burst_are_each_an_event(dedup_env: DedupEnv) -> None:
    """Kalshi repeats a time-less `deactivated` with identical content, here 0.2 s apart (within the tolerance and
    within the gatherers' 0.25 s receive skew): each gatherer holds two copies, so production holds two events, not one
    and not six."""
    base = time.time_ns() // 1000 - 600_000_000
    frame = _frame("deactivated", is_deactivated=True)
    rows = await _three_gatherers(dedup_env, [(frame, base), (frame, base + 200_000)])
    assert [r[0] for r in rows] == ["deactivated", "deactivated"], rows
    assert [r[1] for r in rows] == [base, base + 200_000]  # the first gatherer's two receipts
    with dedup_env.prod() as c:
        assert c.execute("SELECT count(*) FROM lifecycle_copies").fetchone()[0] == 6


async def test_repeats_missed_by_different_gatherers_are_each_one_event(dedup_env: DedupEnv) -> None:
    """The make-chaos case: identical time-less repeats 2 s and 46 s apart, and gatherers restarted between them, so
    each numbers its copies differently (occurrence 0 for a copy its peers call 1). Every repeat is one row."""
    base = time.time_ns() // 1000 - 600_000_000
    frame = _frame("activated", is_deactivated=False, open_ts=1_794_078_000, close_ts=1_799_762_400)
    events = [(frame, base), (frame, base + 2_000_000), (frame, base + 46_000_000)]
    rows = await _three_gatherers(dedup_env, events, seen=[{0, 2}, {1, 2}, {0, 1, 2}])
    assert len(rows) == 3, rows
    for (_, ts, _), (_, emitted) in zip(rows, events, strict=True):
        assert 0 <= ts - emitted <= 500_000  # each row is stamped by a gatherer that received that repeat
    with dedup_env.prod() as c:  # every gatherer copy is accounted for: 2 + 2 + 3
        assert c.execute("SELECT count(*) FROM lifecycle_copies").fetchone()[0] == 7


async def test_a_batch_read_again_adds_nothing(dedup_env: DedupEnv) -> None:
    """A cursor reset makes the deduplicator read a gatherer's rows again: copies it already merged are skipped."""
    base = time.time_ns() // 1000 - 600_000_000
    frame = _frame("deactivated", is_deactivated=True)
    rows = await _three_gatherers(dedup_env, [(frame, base), (frame, base + 200_000)])
    assert len(rows) == 2
    with dedup_env.prod() as c:
        c.execute("UPDATE sync_cursors SET xmin_cursor = 0 WHERE table_name = 'lifecycle_events'")
    await _merge(dedup_env)
    with dedup_env.prod() as c:
        assert c.execute("SELECT count(*) FROM lifecycle_events").fetchone()[0] == 2
        assert c.execute("SELECT count(*) FROM lifecycle_copies").fetchone()[0] == 6


async def test_identical_events_with_their_own_times_are_kept_apart(dedup_env: DedupEnv) -> None:
    """Same content 10 s apart, each with its own time: two events (the tolerance is for receive-time stamps only)."""
    base_ms = time.time_ns() // 1_000_000 - 300_000
    frames = [
        (_frame("close_date_updated", close_ts=1_900_000_000, ts_ms=base_ms), base_ms * 1000 + 5_000),
        (
            _frame("close_date_updated", close_ts=1_900_000_000, ts_ms=base_ms + 10_000),
            (base_ms + 10_000) * 1000 + 5_000,
        ),
    ]
    rows = await _three_gatherers(dedup_env, frames)
    assert [r[1] for r in rows] == [base_ms * 1000, (base_ms + 10_000) * 1000], rows


async def test_event_fee_update_is_recorded(dedup_env: DedupEnv) -> None:
    g = dedup_env.gatherers[0]

    def connect():
        return psycopg.AsyncConnection.connect(dedup_env.prod_cluster.dsn(g.db))

    writers = WriterSet({s.name: BatchWriter(s, connect, flush_ms=10) for s in EVENT_TABLES})
    writers.start()
    router = Router(g.name, writers, GathererMetrics(g.name), GapLog(g.name, _no_gap_db))
    frame = {"type": "event_fee_update", "sid": 3, "msg": {"event_ticker": "KX-EV", "fee_type_override": "flat"}}
    rx = time.time_ns() // 1000
    router.handle(None, orjson.dumps(frame), rx)
    assert router.stats.parse_errors == 0
    assert await writers.stop(10)
    await router.gaplog.stop()
    with g.conn() as c:
        rows = c.execute("SELECT ticker, event_type, exchange_ts FROM lifecycle_events").fetchall()
    assert rows == [("KX-EV", "event_fee_update", rx)]


async def test_claims_past_their_retention_are_forgotten(dedup_env: DedupEnv) -> None:
    from kalshictl.dedup.lifecycle_merge import COPIES_RETENTION_US, prune_copies

    now = time.time_ns() // 1000
    frame = _frame("deactivated", is_deactivated=True)
    await _three_gatherers(dedup_env, [(frame, now - COPIES_RETENTION_US - 60_000_000), (frame, now - 60_000_000)])
    async with await psycopg.AsyncConnection.connect(dedup_env.prod_cluster.dsn(dedup_env.prod_db)) as c:
        assert await prune_copies(c, now) == 3  # the old event's three claims; the recent one's stay
        await c.commit()
    with dedup_env.prod() as c:
        assert c.execute("SELECT count(*) FROM lifecycle_copies").fetchone()[0] == 3
        assert c.execute("SELECT count(*) FROM lifecycle_events").fetchone()[0] == 2  # events are never pruned
