"""Gap windows reach production when they open and again when they close (the close bumps txid); keyed by
(gatherer, instance_id, window_id), one production row per window."""

from __future__ import annotations

import asyncio

import psycopg

from kalshictl.dedup.loops import SyncLoop
from kalshictl.dedup.metrics import DedupMetrics
from kalshictl.gatherer.gaps import GapLog
from kalshictl.schema import GAPS
from tests.dedup.conftest import DedupEnv, now_us


async def test_windows_are_upserted_open_then_closed(dedup_env: DedupEnv) -> None:
    g1 = dedup_env.gatherers[0]

    async def connect():
        return await psycopg.AsyncConnection.connect(g1.cluster.dsn(g1.db))

    gl = GapLog(g1.name, connect)
    gl.start()
    s = dedup_env.settings()
    src = next(g for g in s.gatherers if g.name == g1.name)
    loop = SyncLoop(src, GAPS, s.production, s.sync, DedupMetrics(), asyncio.Event(), [])

    def prod_rows():
        with dedup_env.prod() as c:
            return c.execute(
                "SELECT gatherer, instance_id, window_id, channel, tickers, to_ts, recovery FROM sequence_gaps"
                " ORDER BY window_id"
            ).fetchall()

    try:
        t = now_us()
        w1 = gl.open(channel="orderbook_delta", reason="seq_gap", from_ts=t, tickers=["A", "B"], subscription="ob/1")
        w2 = gl.open(channel="trade", reason="disconnect", from_ts=t)
        await gl.flush(5)
        await loop.step()
        assert prod_rows() == [
            (g1.name, gl.instance_id, w1, "orderbook_delta", ["A", "B"], None, "none"),
            (g1.name, gl.instance_id, w2, "trade", None, None, "none"),
        ]
        gl.close(w1, t + 10)
        gl.close(w2, t + 20, recovery="pending")
        await gl.flush(5)
        await loop.step()
        assert [r[5:] for r in prod_rows()] == [(t + 10, "none"), (t + 20, "pending")]
        gl.set_recovery((gl.instance_id, w2), "recovered")
        await gl.flush(5)
        await loop.step()
        assert [r[5:] for r in prod_rows()] == [(t + 10, "none"), (t + 20, "recovered")]
    finally:
        await gl.stop()
        await loop.close_gatherer()
        await loop.close_production()
