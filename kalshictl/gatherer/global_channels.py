"""The global channels' frames (trade, ticker, market and event lifecycle, event fee updates) into rows."""

from __future__ import annotations

from functools import cached_property

import orjson

from kalshictl.gatherer.occurrence import TickerOccurrences
from kalshictl.kalshi import lifecycle_key
from kalshictl.kalshi.messages import FeeUpdate, Lifecycle, TickerUpdate, Trade
from kalshictl.schema import TickerRow


class GlobalChannels:
    """Trade, ticker and lifecycle rows.

    A part of :class:`~kalshictl.gatherer.router.Router`: methods over its state (see its ``__init__``).
    """

    def _trade(self, t: Trade, rx: int) -> None:
        self._trades.add(
            (t.trade_id, t.exchange_ts, rx, t.ticker, t.price, t.size, t.taker_side, t.is_block_trade, "ws", t.sid)
        )

    @cached_property
    def ticker_occurrences(self) -> TickerOccurrences:
        """Numbers the exchange's ticker updates of one market in one millisecond (every distinct one is kept)."""
        return TickerOccurrences()

    def _ticker(self, u: TickerUpdate, rx: int) -> None:
        state = (
            u.yes_bid,
            u.yes_ask,
            u.last_price,
            u.volume,
            u.open_interest,
            u.dollar_volume,
            u.dollar_open_interest,
            u.yes_bid_size,
            u.yes_ask_size,
            u.last_trade_size,
        )
        occurrence = self.ticker_occurrences.next(u.ticker, u.exchange_ts, state)
        self._tickers.add(TickerRow(u.exchange_ts, rx, u.ticker, *state, "ws", occurrence, u.sid))

    def _lifecycle(self, ev: Lifecycle | FeeUpdate, rx: int) -> None:
        # The message's own time when it has one, else the receive time; never a future time (lifecycle messages
        # carry no ts; created/activated carry a close_ts in the future).
        payload = orjson.dumps(ev.payload).decode()
        ts, dig = lifecycle_key.key_fields(ev.event_type, ev.ticker, ev.payload, ev.exchange_ts, rx)
        occurrence = self.life_occurrences.next(ev.ticker, ev.event_type, dig, rx)
        self._life.add((ts, rx, ev.ticker, ev.event_type, payload, dig, occurrence, ev.sid))
        if self.on_lifecycle is not None and ev.event_type not in ("event_lifecycle", "event_fee_update"):
            self.spawn(self.on_lifecycle(ev))
