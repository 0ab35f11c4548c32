"""``kalshictl coverage --tickers``: which days of a market come from the history import and which were recorded."""

from __future__ import annotations

import asyncio

from kalshictl.dedup.history.importer import import_history
from kalshictl.dedup.history.plan import ImportRange
from kalshictl.research.coverage import day_sources

from .conftest import ANCHOR, DAYS, HistoryEnv


def test_days_from_history_and_live(history_env: HistoryEnv) -> None:
    env = history_env
    h = env.sim.ex.history
    asyncio.run(import_history(env.settings(), ImportRange(ANCHOR - DAYS * 86_400, ANCHOR, periods=(60,))))
    ticker, pm = next((t, m) for t, m in sorted(h.markets.items()) if m.trades)
    day_us = pm.trades[0].ts_ms // 86_400_000 * 86_400_000_000
    with env.prod() as c:  # the gatherers recorded this market's book on a later day
        c.execute(
            "INSERT INTO orderbook_deltas (exchange_ts, received_at, ticker, side, price, size_delta, gatherer)"
            " VALUES (%s, %s, %s, true, 4000, 100, 'g1')",
            (day_us + 86_400_000_000 + 5, day_us + 86_400_000_000 + 6, ticker),
        )
        days = day_sources(c, [ticker], (ANCHOR - DAYS * 86_400) * 1_000_000, 2**62)
    by_day = {d["day"]: d for d in days}
    first = by_day[min(by_day)]
    assert first["source"] == "history" and first["historical_trades"] > 0 and first["book_deltas"] == 0
    later = [d for d in days if d["book_deltas"]]
    assert len(later) == 1 and later[0]["source"] in ("live", "both")
    assert first["historical_trades"] == sum(1 for t in pm.trades if t.ts_ms // 86_400_000 * 86_400_000_000 == day_us)
