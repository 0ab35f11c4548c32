"""The global channels' frames (trade, ticker, market and event lifecycle, event fee updates) into rows."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import orjson

from kalshictl.gatherer.occurrence import TickerOccurrences
from kalshictl.gatherer.router_state import Background, ConnStates, RouterStats
from kalshictl.kalshi import lifecycle_key
from kalshictl.kalshi.messages import FeeUpdate, Lifecycle, TickerUpdate, Trade
from kalshictl.schema import LifecycleRow, TickerRow, TradeRow

if TYPE_CHECKING:
    from kalshictl.gatherer.connections import WsConnection
    from kalshictl.gatherer.writers import TableWriter

LifecycleFn = Callable[[Lifecycle], Awaitable[None]]


class GlobalChannels:
    """Trade, ticker and lifecycle rows; a market lifecycle event is also handed to ``on_lifecycle`` (placement)."""

    def __init__(
        self,
        states: ConnStates,
        stats: RouterStats,
        background: Background,
        trades: TableWriter,
        tickers: TableWriter,
        lifecycle: TableWriter,
        on_lifecycle: LifecycleFn | None,
    ) -> None:
        self.states = states
        self.stats = stats
        self.background = background
        self._trades = trades
        self._tickers = tickers
        self._life = lifecycle
        self.on_lifecycle = on_lifecycle
        # the exchange's ticker updates of one market in one millisecond: every distinct one is kept, numbered
        self.ticker_occurrences = TickerOccurrences()
        self.life_occurrences = lifecycle_key.Occurrences()  # identical lifecycle messages in a burst: 0, 1, 2 …

    def _seen(self, conn: WsConnection, ts: int | None) -> None:
        st = self.states[conn]
        if ts and ts > st.last_exchange_ts:
            st.last_exchange_ts = ts
            if ts > self.stats.last_exchange_ts:
                self.stats.last_exchange_ts = ts

    def trade(self, conn: WsConnection, t: Trade, rx: int) -> None:
        self._seen(conn, t.exchange_ts)
        self._trades.add(
            TradeRow(
                trade_id=t.trade_id,
                exchange_ts=t.exchange_ts,
                received_at=rx,
                ticker=t.ticker,
                price=t.price,
                size=t.size,
                taker_side=t.taker_side,
                is_block_trade=t.is_block_trade,
                source="ws",
                sid=t.sid,
            )
        )

    def ticker(self, conn: WsConnection, u: TickerUpdate, rx: int) -> None:
        self._seen(conn, u.exchange_ts)
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

    def lifecycle(self, ev: Lifecycle | FeeUpdate, rx: int) -> None:
        # The message's own time when it has one, else the receive time; never a future time (lifecycle messages
        # carry no ts; created/activated carry a close_ts in the future).
        payload = orjson.dumps(ev.payload).decode()
        ts, dig = lifecycle_key.key_fields(ev.event_type, ev.ticker, ev.payload, ev.exchange_ts, rx)
        occurrence = self.life_occurrences.next(ev.ticker, ev.event_type, dig, rx)
        self._life.add(
            LifecycleRow(
                exchange_ts=ts,
                received_at=rx,
                ticker=ev.ticker,
                event_type=ev.event_type,
                payload=payload,
                digest=dig,
                occurrence=occurrence,
                sid=ev.sid,
            )
        )
        on_lifecycle = self.on_lifecycle
        if (
            on_lifecycle is not None
            and isinstance(ev, Lifecycle)  # a FeeUpdate's event_type is always event_fee_update
            and ev.event_type not in ("event_lifecycle", "event_fee_update")
        ):
            self.background.spawn(on_lifecycle(ev))
