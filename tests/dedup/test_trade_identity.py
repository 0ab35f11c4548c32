"""A trade is stored once by trade_id: a REST-backfilled copy whose created_time is coarser than the
WebSocket's ts_ms must not become a second production row, whichever copy is merged first, and merges of the same
table from several gatherers at once see each other's copies."""

from __future__ import annotations

import asyncio

from kalshictl.dedup.loops import SyncLoop
from kalshictl.dedup.metrics import DedupMetrics
from kalshictl.schema import TRADES
from tests.dedup.conftest import DedupEnv, now_us, trade_row, write_trades


async def test_rest_and_ws_copies_of_a_trade_are_one_row(dedup_env: DedupEnv) -> None:
    base = (now_us() // 1_000_000 - 120) * 1_000_000  # a whole second, two minutes ago
    ws_rows = [trade_row(i, base + 345_000) for i in range(50)]  # ts_ms resolution
    rest_rows = [(r[0], r[1] - r[1] % 1_000_000, *r[2:]) for r in ws_rows[:30]]  # created_time in whole seconds
    g1, g2, g3 = dedup_env.gatherers
    with g1.conn() as c:
        write_trades(c, ws_rows)
    with g2.conn() as c:  # blind for the first 30: they came back from REST
        write_trades(c, rest_rows)
        c.execute("UPDATE trades SET source = 'rest'")
    with g3.conn() as c:  # both copies in one gatherer (a WebSocket copy that arrived after its backfill)
        write_trades(c, ws_rows[:10] + [(r[0], r[1] - 1_000_000, *r[2:]) for r in rest_rows[:10]])
    s = dedup_env.settings()
    metrics = DedupMetrics()
    loops = [SyncLoop(src, TRADES, s.production, s.sync, metrics, asyncio.Event(), []) for src in s.gatherers]
    try:
        # the REST-only gatherer first, then the other two concurrently
        await loops[1].step()
        await asyncio.gather(loops[0].step(), loops[2].step())
    finally:
        for loop in loops:
            await loop.close_gatherer()
            await loop.close_production()
    with dedup_env.prod() as c:
        n, distinct, rest = c.execute(
            "SELECT count(*), count(DISTINCT trade_id), count(*) FILTER (WHERE source = 'rest') FROM trades"
        ).fetchone()
    assert (n, distinct) == (50, 50)
    assert rest == 30  # the first copy stored wins; the WebSocket copies of those were not added
