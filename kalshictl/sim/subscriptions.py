"""Kalshi's WebSocket channels, one subscription (:class:`Sub`) and the registry routing a world's events to them.

Shared by every world the protocol layer serves (the sim's ``Feed``, ``kalshictl.replay``'s recorded feed:
docs/replay.md).
A subscription knows its connection only as a :class:`FrameSink`: the frames it is sent and whether it is still open.
"""

from __future__ import annotations

from typing import Protocol

ORDERBOOK, TICKER, TRADE, LIFECYCLE = "orderbook_delta", "ticker", "trade", "market_lifecycle_v2"
MVE_LIFECYCLE = "multivariate_market_lifecycle"
MVE_PREFIX = "KXMVE"  # tickers of multivariate (combo) markets, events and series start with this
# channels that take market tickers (orderbook_delta requires them; the others default to all markets)
TICKERED = (ORDERBOOK, TICKER, TRADE, "fill", "market_positions", "user_orders")
GLOBAL = (LIFECYCLE, "order_group_updates", "communications", MVE_LIFECYCLE)
INDEXED = ("cfbenchmarks_value", "pyth_value")
PRIVATE = frozenset(("fill", "market_positions", "user_orders", "order_group_updates", "communications"))
CHANNELS = frozenset((*TICKERED, *GLOBAL, *INDEXED))


class FrameSink(Protocol):
    """Where a subscription's frames go (``kalshictl.sim.connection.Connection``)."""

    @property
    def cid(self) -> int: ...
    @property
    def closed(self) -> bool: ...
    def send(self, frame: bytes) -> None:
        """Queue one text frame (in order)."""
        ...

    def abort(self) -> None:
        """Drop the connection abruptly, as a network failure would."""
        ...


class Sub:
    """One subscription (one channel) of one connection; ``tickers=None`` means all markets / global."""

    __slots__ = ("channel", "conn", "seq", "sid", "tickers", "yes_price")

    def __init__(self, conn: FrameSink, sid: int, channel: str, tickers: set[str] | None, yes_price: bool) -> None:
        self.conn = conn
        self.sid = sid
        self.channel = channel
        self.tickers = tickers
        self.seq = 0
        self.yes_price = yes_price


class Subscriptions:
    """Which subscriptions receive which market's events: per channel, by ticker and "all markets"."""

    def __init__(self) -> None:
        self.by_ticker: dict[str, dict[str, set[Sub]]] = {ch: {} for ch in TICKERED}
        self.all: dict[str, set[Sub]] = {ch: set() for ch in CHANNELS}

    def register(self, sub: Sub) -> None:
        """Start routing events to ``sub``."""
        if sub.tickers is None:
            self.all[sub.channel].add(sub)
        else:
            self.add_tickers(sub, sub.tickers)

    def add_tickers(self, sub: Sub, tickers: set[str] | list[str]) -> None:
        """Route ``tickers`` to ``sub`` (and remember them in ``sub.tickers``)."""
        index = self.by_ticker[sub.channel]
        assert sub.tickers is not None
        for t in tickers:
            sub.tickers.add(t)
            index.setdefault(t, set()).add(sub)

    def remove_tickers(self, sub: Sub, tickers: set[str] | list[str]) -> None:
        """Stop routing ``tickers`` to ``sub``."""
        index = self.by_ticker[sub.channel]
        assert sub.tickers is not None
        for t in tickers:
            sub.tickers.discard(t)
            subs = index.get(t)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del index[t]

    def unregister(self, sub: Sub) -> None:
        """Stop routing anything to ``sub``."""
        if sub.tickers is None:
            self.all[sub.channel].discard(sub)
        else:
            self.remove_tickers(sub, list(sub.tickers))

    def _ticker_subs(self, channel: str, ticker: str) -> list[Sub]:
        subs = self.by_ticker[channel].get(ticker)
        every = self.all[channel]
        if subs:
            return [*subs, *every] if every else list(subs)
        return list(every) if every else []
