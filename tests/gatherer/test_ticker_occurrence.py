"""Exchange ticker updates of one market in one millisecond are all kept, numbered in the order received
(migrations/README.md, "Tickers"); a new millisecond, or another market, starts again at 0; a frame delivered twice
is one update."""

from __future__ import annotations

import orjson

from kalshictl.schema import TickerRow
from tests.gatherer.test_hot_path import router


def ticker(market: str, ts_ms: int, yes_bid: str) -> bytes:
    msg = {
        "market_ticker": market,
        "price_dollars": "0.5000",
        "yes_bid_dollars": yes_bid,
        "yes_ask_dollars": "0.6000",
        "volume_fp": "10.00",
        "open_interest_fp": "5.00",
        "ts_ms": ts_ms,
        "ts": ts_ms // 1000,
    }
    return orjson.dumps({"type": "ticker", "sid": 4, "msg": msg})


def test_same_millisecond_updates_are_numbered() -> None:
    r, conn, _metrics = router()
    frames = [
        ticker("A", 1_000, "0.4000"),
        ticker("A", 1_000, "0.4100"),  # same market, same millisecond: a second row, not dropped
        ticker("A", 1_000, "0.4100"),  # the same frame again (a repeated delivery): the same row
        ticker("B", 1_000, "0.3000"),
        ticker("A", 1_000, "0.4200"),
        ticker("A", 1_001, "0.4300"),
    ]
    for i, f in enumerate(frames):
        r.handle(conn, f, 10_000 + i)
    rows = r.writers["tickers"]._buf
    assert all(isinstance(row, TickerRow) for row in rows)
    got = [(row.ticker, row.exchange_ts, row.occurrence, row.yes_bid, row.source) for row in rows]
    assert got == [
        ("A", 1_000_000, 0, 4000, "ws"),
        ("A", 1_000_000, 1, 4100, "ws"),
        ("A", 1_000_000, 1, 4100, "ws"),
        ("B", 1_000_000, 0, 3000, "ws"),
        ("A", 1_000_000, 2, 4200, "ws"),
        ("A", 1_001_000, 0, 4300, "ws"),
    ]
