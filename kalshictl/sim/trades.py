"""In-memory trade history for ``GET /markets/trades`` (newest first, cursor pagination)."""

from __future__ import annotations

from typing import NamedTuple

from kalshictl.sim.fmt import PRICE_STR, iso, size_str


class TradeRec(NamedTuple):
    """One executed trade in integer units."""

    seq: int
    trade_id: str
    ticker: str
    ts_ms: int
    yes_price: int
    no_price: int
    size: int
    taker: str  # outcome side: "yes" | "no"


def trade_dict(t: TradeRec) -> dict:
    """The REST ``Trade`` object."""
    return {
        "trade_id": t.trade_id,
        "ticker": t.ticker,
        "count_fp": size_str(t.size),
        "yes_price_dollars": PRICE_STR[t.yes_price],
        "no_price_dollars": PRICE_STR[t.no_price],
        "taker_side": t.taker,
        "taker_outcome_side": t.taker,
        "taker_book_side": "bid" if t.taker == "yes" else "ask",
        "created_time": iso(t.ts_ms // 1000),
        "is_block_trade": False,
    }


class TradeLog:
    """Keeps the most recent ``capacity`` trades."""

    def __init__(self, capacity: int = 200_000) -> None:
        self.capacity = max(1, capacity)
        self._trades: list[TradeRec] = []
        self._base = 0  # seq of _trades[0]
        self.next_seq = 0

    def add(self, trade_id: str, ticker: str, ts_ms: int, yes: int, no: int, size: int, taker: str) -> TradeRec:
        """Record a trade."""
        rec = TradeRec(self.next_seq, trade_id, ticker, ts_ms, yes, no, size, taker)
        self.next_seq += 1
        self._trades.append(rec)
        if len(self._trades) >= 2 * self.capacity:
            drop = len(self._trades) - self.capacity
            del self._trades[:drop]
            self._base += drop
        return rec

    def page(
        self,
        limit: int,
        before_seq: int | None = None,
        ticker: str | None = None,
        min_ts: int | None = None,
        max_ts: int | None = None,
    ) -> tuple[list[TradeRec], int | None]:
        """Up to ``limit`` trades newest first with seq < ``before_seq``; returns (trades, next before_seq or None)."""
        end = self.next_seq if before_seq is None else min(before_seq, self.next_seq)
        pos = end - self._base - 1
        out: list[TradeRec] = []
        trades = self._trades
        while pos >= 0:
            t = trades[pos]
            pos -= 1
            ts = t.ts_ms // 1000
            if ticker is not None and t.ticker != ticker:
                continue
            if max_ts is not None and ts > max_ts:
                continue
            if min_ts is not None and ts < min_ts:
                break  # older from here on
            out.append(t)
            if len(out) == limit:
                return out, (t.seq if pos >= 0 else None)
        return out, None
