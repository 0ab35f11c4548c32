"""Gap windows are written when they open, closed by an UPDATE that bumps txid, and survive restarts."""

from __future__ import annotations

import asyncio
import shutil
import statistics
import time

import psycopg
import pytest

from kalshictl.db.connect import connect_async
from kalshictl.db.migrate import migrate, migrations_root
from kalshictl.gatherer.gaps import GapLog
from tests.gatherer.conftest import until


def _now_us() -> int:
    return time.time_ns() // 1000


def _log(dsn: str, name: str = "g1", **kw) -> GapLog:
    async def connect():
        return await psycopg.AsyncConnection.connect(dsn)

    return GapLog(name, connect, **kw)


def _rows(dsn: str) -> list[dict]:
    with psycopg.connect(dsn) as conn:
        cur = conn.execute(
            "SELECT gatherer, instance_id, window_id, channel, subscription, sid, tickers, reason, from_ts, to_ts,"
            " recovery, txid::text::bigint AS txid FROM sequence_gaps ORDER BY gap_id"
        )
        cols = [d.name for d in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


async def test_open_is_durable_at_once_and_close_bumps_txid(gatherer_dsn: str) -> None:
    gl = _log(gatherer_dsn)
    gl.start()
    try:
        t0 = _now_us()
        wid = gl.open(
            channel="orderbook_delta",
            reason="seq_gap",
            from_ts=t0,
            subscription="orderbook-0/4",
            sid=4,
            tickers=["B", "A", "B"],
            expected_seq=10,
            received_seq=12,
        )
        rows = await until(lambda: _rows(gatherer_dsn), 5, "the open window's row")
        assert len(rows) == 1
        r = rows[0]
        assert (r["window_id"], r["channel"], r["subscription"], r["sid"], r["tickers"]) == (
            wid,
            "orderbook_delta",
            "orderbook-0/4",
            4,
            ["A", "B"],
        )
        assert r["to_ts"] is None and r["recovery"] == "none" and r["instance_id"] == gl.instance_id
        opened_txid = r["txid"]
        assert gl.committed_through_us(_now_us()) > t0  # committed: the heartbeat may pass it
        gl.close(wid, t0 + 5_000, recovery="pending")
        await gl.flush(5)
        r = _rows(gatherer_dsn)[0]
        assert r["to_ts"] == t0 + 5_000 and r["recovery"] == "pending"
        assert r["txid"] > opened_txid  # the deduplicator's watermark sees the closed version
        # many windows, one at a time: each is committed well within the ~50 ms budget
        for i in range(40):
            gl.open(channel="trade", reason="disconnect", from_ts=_now_us(), subscription=f"global-{i}/trade")
            await gl.flush(5)
        median = statistics.median(gl.commit_ms[-40:])
        print(f"GapLog open->commit: median {median:.1f} ms, max {max(gl.commit_ms[-40:]):.1f} ms")
        assert median < 50, gl.commit_ms[-40:]
    finally:
        await gl.stop()


async def test_a_close_before_the_insert_is_one_row(gatherer_dsn: str) -> None:
    gl = _log(gatherer_dsn)  # not started: both operations queue
    wid = gl.open(channel="ticker", reason="disconnect", from_ts=100)
    gl.close(wid, 200)
    assert len(gl) == 1  # folded into the queued INSERT
    gl.start()
    try:
        await gl.flush(5)
        assert [(r["from_ts"], r["to_ts"]) for r in _rows(gatherer_dsn)] == [(100, 200)]
    finally:
        await gl.stop()


async def test_heartbeat_never_passes_an_uncommitted_window(pg_cluster_factory) -> None:
    cluster = pg_cluster_factory()
    dsn = cluster.dsn("postgres")
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate(conn, "gatherer", flavor="partitioned")
    gl = _log(dsn, retry_max_s=0.2)
    gl.start()
    try:
        cluster.stop("fast")
        t0 = _now_us()
        gl.open(channel="orderbook_delta", reason="disconnect", from_ts=t0 - 1000, tickers=["A"])
        await asyncio.sleep(0.5)  # the writer is failing and retrying
        assert gl.failures > 0
        assert gl.committed_through_us(_now_us()) == t0 - 1000
        cluster.start()
        await until(lambda: gl.committed_through_us(_now_us()) > t0, 15, "the window to be committed after recovery")
        assert [r["from_ts"] for r in _rows(dsn)] == [t0 - 1000]
    finally:
        await gl.stop()


async def test_restart_closes_previous_instances_windows(gatherer_dsn: str) -> None:
    first = _log(gatherer_dsn)
    first.start()
    t0 = _now_us()
    w_book = first.open(channel="orderbook_delta", reason="seq_gap", from_ts=t0, tickers=["A", "B"])
    w_trade = first.open(channel="trade", reason="disconnect", from_ts=t0 + 1)
    await first.flush(5)
    await first.stop()  # as if killed: both windows stay open in the database
    other = _log(gatherer_dsn, name="g2")  # another gatherer sharing the database is not touched
    other.start()
    other.open(channel="trade", reason="disconnect", from_ts=t0)
    await other.flush(5)
    closed: list = []
    second = _log(gatherer_dsn, on_closed=closed.append)
    second.start()
    try:
        resumed = t0 + 9_000_000
        second.restarted(t0 + 2, resumed, recovery="pending")
        await second.flush(5)
        rows = {(r["gatherer"], r["instance_id"], r["window_id"]): r for r in _rows(gatherer_dsn)}
        book = rows[("g1", first.instance_id, w_book)]
        trade = rows[("g1", first.instance_id, w_trade)]
        assert book["to_ts"] == resumed and trade["to_ts"] == resumed
        assert trade["recovery"] == "pending"  # trades of a window a previous instance left open can be re-fetched
        restart = [r for r in rows.values() if r["reason"] == "restart"]
        assert len(restart) == 1 and restart[0]["channel"] == "*" and restart[0]["tickers"] is None
        assert (restart[0]["from_ts"], restart[0]["to_ts"]) == (t0 + 2 - 1_000_000, resumed)  # less the clock slack
        assert [r["to_ts"] for (g, _i, _w), r in rows.items() if g == "g2"] == [None]
        assert {(w.instance_id, w.window_id) for w in closed} >= {
            (first.instance_id, w_book),
            (first.instance_id, w_trade),
        }
    finally:
        await second.stop()
        await other.stop()


@pytest.mark.parametrize("target", ["gatherer", "production"])
def test_migration_converts_old_gap_rows(pg_cluster, fresh_db, tmp_path, target) -> None:
    old = tmp_path / "old"
    shutil.copytree(migrations_root(), old)
    for path in old.glob("*/*.sql"):
        if int(path.name[:3]) >= 10:
            path.unlink()
    dsn = pg_cluster.dsn(fresh_db)
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate(conn, target, root=old, flavor="partitioned")
        if target == "gatherer":
            conn.execute(
                "INSERT INTO sequence_gaps (gatherer, sid, ticker, reason, from_ts, to_ts, detected_at) VALUES"
                " ('g1', 3, 'A', 'seq_gap', 10, 20, 11), ('g1', NULL, NULL, 'restart', 30, NULL, 31)"
            )
        else:
            off = 5 << 40
            conn.execute(
                "INSERT INTO sequence_gaps (gatherer, gap_id, sid, ticker, reason, from_ts, to_ts, detected_at)"
                " VALUES ('g1', %s, 3, 'A', 'seq_gap', 10, 20, 11), ('g1', %s, NULL, NULL, 'restart', 30, NULL, 31)",
                (off + 1, off + 2),
            )
        migrate(conn, target, flavor="partitioned")
    rows = _rows(dsn) if target == "gatherer" else None
    with psycopg.connect(dsn) as conn:
        got = conn.execute(
            "SELECT instance_id, window_id, channel, tickers, reason, from_ts, to_ts, recovery FROM sequence_gaps"
            " ORDER BY window_id"
        ).fetchall()
    assert got == [
        ("legacy", 1, "orderbook_delta", ["A"], "seq_gap", 10, 20, "none"),
        ("legacy", 2, "*", None, "restart", 30, None, "none"),
    ]
    if rows is not None:  # a new window after the conversion gets a fresh gap_id
        with psycopg.connect(dsn, autocommit=True) as conn:
            gid = conn.execute(
                "INSERT INTO sequence_gaps (gatherer, instance_id, window_id, channel, reason, from_ts, detected_at)"
                " VALUES ('g1', 'x', 1, 'trade', 'disconnect', 1, 1) RETURNING gap_id"
            ).fetchone()[0]
        assert gid == 3


async def test_connect_async_works_with_the_log(gatherer_dsn: str) -> None:
    """The service's own connect function (DatabaseSettings) is what the log uses in production."""
    from kalshictl.config import DatabaseSettings

    settings = DatabaseSettings(dsn=gatherer_dsn)
    gl = GapLog("g1", lambda: connect_async(settings))
    gl.start()
    try:
        gl.record(channel="trade", reason="overflow", from_ts=5, to_ts=9)
        await gl.flush(5)
        assert [(r["reason"], r["to_ts"]) for r in _rows(gatherer_dsn)] == [("overflow", 9)]
    finally:
        await gl.stop()
