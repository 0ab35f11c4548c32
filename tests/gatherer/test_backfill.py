"""Trades lost in a gap window come back from REST: an exchange-side outage of every WebSocket
connection loses trades on the wire; the window is recorded, backfilled from GET /markets/trades and marked
recovered; every emitted trade is stored once."""

from __future__ import annotations

import asyncio
from collections import Counter

import psycopg

from kalshictl.gatherer.backfill import created_us, trade_row
from kalshictl.sim import SimConfig, SimExchange
from kalshictl.sim.ground_truth import load
from tests.gatherer.conftest import running_gatherer, until


def test_rest_trade_rows() -> None:
    t = {
        "trade_id": "6b1f2a4e-9a43-4c5f-8f7e-0d2a3f1b9c10",
        "ticker": "A",
        "count_fp": "12.00",
        "yes_price_dollars": "0.4100",
        "no_price_dollars": "0.5900",
        "taker_outcome_side": "no",
        "created_time": "2026-11-27T15:00:01.234567Z",
        "is_block_trade": False,
    }
    row = trade_row(t, 7)
    assert row[1] == created_us("2026-11-27T15:00:01.234Z") == 1_795_791_601_234_000
    assert row[2:] == (7, "A", 4100, 1200, False, False, "rest", None)
    assert created_us("2026-11-27T15:00:01Z") == 1_795_791_601_000_000


def _trades(dsn: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT trade_id::text, source FROM trades").fetchall()


def _windows(dsn: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT channel, reason, from_ts, to_ts, recovery FROM sequence_gaps ORDER BY gap_id"
        ).fetchall()


async def test_outage_trades_are_backfilled_and_window_recovered(gatherer_dsn: str, tmp_path) -> None:
    cfg = SimConfig(markets=40, seed=21, rate=300, trade_share=0.4, paused=True, ground_truth=tmp_path / "gt.jsonl")
    async with SimExchange(cfg) as ex, running_gatherer(gatherer_dsn, ex) as g:
        ex.resume()
        await asyncio.sleep(1.0)
        ex.set_faults("refuse=1:2.5")  # the exchange refuses every reconnect for 2.5 s
        ex.drop_connections()
        await asyncio.sleep(4.0)
        ex.set_faults("")
        await until(lambda: g.manager.healthy_count() == g.manager.target, 20, "reconnected")
        await asyncio.sleep(1.0)
        ex.pause()
        ex.flush()
        truth = Counter(r["trade_id"] for r in load(ex.ground_truth_path) if r["kind"] == "trade")

        def trade_windows_settled() -> bool:
            ws = [w for w in _windows(gatherer_dsn) if w[0] in ("trade", "ticker", "market_lifecycle_v2", "*")]
            return bool(ws) and all(w[4] in ("recovered", "failed") for w in ws)

        await until(trade_windows_settled, 30, "trade windows to be backfilled")
        await until(lambda: set(truth) <= {t for t, _s in _trades(gatherer_dsn)}, 10, "every trade stored")
    rows = _trades(gatherer_dsn)
    stored = Counter(t for t, _s in rows)
    sources = Counter(s for _t, s in rows)
    trade_windows = [w for w in _windows(gatherer_dsn) if w[0] == "trade"]
    print(f"trades emitted {sum(truth.values())}, stored {len(rows)}, by source {dict(sources)}")
    assert trade_windows and all(w[1] == "disconnect" and w[4] == "recovered" for w in trade_windows), trade_windows
    assert sources["rest"] > 0  # the outage lost trades on the wire and REST brought them back
    assert set(stored) == set(truth) and max(stored.values()) == 1  # nothing missing, nothing twice
    with psycopg.connect(gatherer_dsn) as conn:  # tickers are re-anchored from one REST market listing
        anchors, times, stamped = conn.execute(
            "SELECT count(*), count(DISTINCT exchange_ts), bool_and(exchange_ts = received_at) FROM tickers"
            " WHERE source = 'rest'"
        ).fetchone()
    # every row of one listing carries the time that listing was received (no made-up distinct microseconds)
    assert anchors > times and stamped, (anchors, times, stamped)
    ticker_windows = [w for w in _windows(gatherer_dsn) if w[0] == "ticker"]
    assert ticker_windows and all(w[4] == "recovered" for w in ticker_windows), ticker_windows
    print(f"ticker snapshot rows from REST after the outage: {anchors}")
