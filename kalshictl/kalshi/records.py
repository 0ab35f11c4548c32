"""The typed records a Kalshi WebSocket frame becomes, and the error a bad frame becomes (docs/gatherer.md).

msgspec Structs: positional construction and equality like dataclasses, cheaper to build. Units: prices in
ten-thousandths of a dollar, sizes in hundredths of a contract, times in microseconds (:mod:`kalshictl.units`);
``side``/``taker_side`` are booleans, ``True`` = YES.
"""

from __future__ import annotations

from typing import Any

from msgspec import Struct


class OrderbookSnapshot(Struct, gc=False):
    """A full book of one market: ``yes``/``no`` bid levels ``[(price, size)]`` ascending, each side's own leg."""

    sid: int
    seq: int | None
    ticker: str
    yes: list[tuple[int, int]]
    no: list[tuple[int, int]]


class OrderbookDelta(Struct, gc=False):
    """A signed change of the size at (side, price); ``exchange_ts`` None when the frame carries no time."""

    sid: int
    seq: int | None
    ticker: str
    side: bool
    price: int
    size_delta: int
    exchange_ts: int | None


class Trade(Struct, gc=False):
    """One trade; ``price`` is the YES price, ``taker_side`` the taker's outcome side (True = YES)."""

    sid: int | None
    trade_id: str
    ticker: str
    exchange_ts: int
    price: int
    size: int
    taker_side: bool
    is_block_trade: bool


class TickerUpdate(Struct, gc=False):
    """A ticker channel update."""

    sid: int | None
    ticker: str
    exchange_ts: int
    yes_bid: int | None
    yes_ask: int | None
    last_price: int | None
    volume: int | None
    open_interest: int | None
    dollar_volume: int | None
    dollar_open_interest: int | None
    yes_bid_size: int | None
    yes_ask_size: int | None
    last_trade_size: int | None


class Lifecycle(Struct):
    """A market lifecycle message (``market_lifecycle_v2`` / ``multivariate_market_lifecycle``) or an
    ``event_lifecycle``.

    ``exchange_ts`` is the message's own time, ``None`` when it carries none: ``ts_ms``/``ts`` if present, else
    ``settled_ts`` of a ``settled`` and ``determination_ts`` of a ``determined`` event. ``open_ts``/``close_ts`` are
    never used (they are the market's schedule, ``close_ts`` is in the future). ``msg_type`` is the frame's type.
    """

    sid: int | None
    ticker: str
    event_type: str
    exchange_ts: int | None
    payload: dict[str, Any]
    msg_type: str = "market_lifecycle_v2"


class FeeUpdate(Struct):
    """An ``event_fee_update`` (on ``market_lifecycle_v2``): an event-level fee override set, or cleared (both
    overrides ``None``). ``ticker`` is the ``event_ticker`` (``series_ticker`` if that is what was given); stored as
    a lifecycle row with ``event_type = 'event_fee_update'``. ``exchange_ts`` None unless the message has a time."""

    sid: int | None
    ticker: str
    exchange_ts: int | None
    fee_type_override: str | None
    fee_multiplier_override: float | int | str | None
    payload: dict[str, Any]
    event_type: str = "event_fee_update"


class Subscribed(Struct):
    """Ack of ``subscribe`` (one per channel)."""

    id: int | None
    channel: str
    sid: int


class Ack(Struct):
    """``ok`` (update_subscription / list_subscriptions) or ``unsubscribed``; ``seq`` as sent."""

    type: str
    id: int | None
    sid: int | None
    seq: int | None
    msg: Any


class ErrorMsg(Struct):
    """A command error; the codes are named in :mod:`kalshictl.kalshi.ws_codes` (docs/sim.md lists them)."""

    id: int | None
    code: int
    message: str
    market_ticker: str | None


class ParseError(Struct):
    """A frame that could not be turned into a record. ``kind``: json | shape | type | value (| internal: a bug)."""

    kind: str
    detail: str
    sid: int | None = None
    seq: int | None = None
    msg_type: str | None = None


Record = OrderbookSnapshot | OrderbookDelta | Trade | TickerUpdate | Lifecycle | FeeUpdate | Subscribed | Ack | ErrorMsg
ERROR_KINDS = ("json", "shape", "type", "value")  # the kinds of ParseError bad input can give
