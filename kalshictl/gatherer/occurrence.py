"""Occurrence numbers for order-book deltas and ticker updates (migrations/README.md).

Identical deltas — same (ticker, exchange_ts, side, price, size_delta) — are numbered 0, 1, 2… in this gatherer's
ordered stream of that market, so the k-th identical delta maps to the same row on every gatherer. Deltas of one
market arrive in exchange order on one subscription, so only the current millisecond of each market is remembered.
"""

from __future__ import annotations

from typing import Any


class OccurrenceCounter:
    """Per-market numbering of identical deltas within one exchange timestamp."""

    __slots__ = ("_by_ticker",)

    def __init__(self) -> None:
        self._by_ticker: dict[str, tuple[int, dict[tuple[bool, int, int], int]]] = {}

    def next(self, ticker: str, exchange_ts: int, side: bool, price: int, size_delta: int) -> int:
        """The occurrence number of this delta (counts every delta received, stored or not)."""
        state = self._by_ticker.get(ticker)
        key = (side, price, size_delta)
        if state is None or state[0] != exchange_ts:
            self._by_ticker[ticker] = (exchange_ts, {key: 1})
            return 0
        counts = state[1]
        n = counts.get(key, 0)
        counts[key] = n + 1
        return n

    def forget(self, ticker: str) -> None:
        """Drop a market's state (unsubscribed)."""
        self._by_ticker.pop(ticker, None)

    def __len__(self) -> int:
        return len(self._by_ticker)


class TickerOccurrences:
    """Per-market numbering of exchange ticker updates within one exchange timestamp: every distinct update of a
    market in one millisecond is kept, numbered 0, 1, 2 … in the order received (the ticker channel is one
    subscription, in exchange order), so the k-th update of that millisecond is the same row on every gatherer. An
    update identical to the one just before it in that millisecond is the same update delivered twice: it gets the
    same number (and is stored once)."""

    __slots__ = ("_by_ticker",)

    def __init__(self) -> None:
        # ticker -> (exchange_ts, the last number given at it, the content it was given to)
        self._by_ticker: dict[str, tuple[int, int, tuple[Any, ...]]] = {}

    def next(self, ticker: str, exchange_ts: int, content: tuple[Any, ...]) -> int:
        state = self._by_ticker.get(ticker)
        if state is None or state[0] != exchange_ts:
            n = 0
        elif state[2] == content:
            return state[1]
        else:
            n = state[1] + 1
        self._by_ticker[ticker] = (exchange_ts, n, content)
        return n
