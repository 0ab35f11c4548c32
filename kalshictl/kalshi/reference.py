"""The reference path's per-type readers: a decoded frame's ``msg`` -> its record, field by field in Python.

Reads every shape the exchange has sent: the current fixed-point one (``price_dollars`` / ``delta_fp`` /
``yes_dollars_fp`` ...) and the integer-cent one recorded before 2026-03-12 (``price`` / ``delta`` / ``yes`` ...), with
numbers as JSON numbers or strings (docs/sim.md lists the current shapes). A reader raises
:class:`~kalshictl.kalshi.fields.FieldError` on a bad field; the parser (:mod:`kalshictl.kalshi.parser`) turns it
into a ParseError and counts unknown fields against each type's :attr:`DataReader.fields`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from kalshictl.kalshi import fields as fld
from kalshictl.kalshi.fields import FieldError
from kalshictl.kalshi.records import (
    Ack,
    ErrorMsg,
    FeeUpdate,
    Lifecycle,
    OrderbookDelta,
    OrderbookSnapshot,
    Record,
    Subscribed,
    TickerUpdate,
    Trade,
)
from kalshictl.kalshi.validate import TRADE_ID, is_ticker
from kalshictl.kalshi.values import NUM_MAX_LEN, fixed
from kalshictl.units import PRICE_MAX

Msg = dict[str, Any]

LIFECYCLE_TYPES = ("market_lifecycle_v2", "multivariate_market_lifecycle")
# The event's own time, for the event types that have one (never open_ts/close_ts: the market's schedule).
LIFECYCLE_OWN_TIME = {"settled": "settled_ts", "determined": "determination_ts"}


# ----------------------------------------------------------------------------------------------------------------
# order books


def read_delta(mtype: str, msg: Msg, sid: int | None, seq: int | None, use_yes_price: bool) -> OrderbookDelta:
    assert sid is not None  # DataReader.needs_sid
    ticker = fld.ticker(msg, "market_ticker")
    side = fld.side(msg.get("side"))
    price = fld.price_field(msg, "price_dollars", "price")
    if use_yes_price and not side:
        price = PRICE_MAX - price
    size_delta = fld.size_field(msg, "delta_fp", "delta", signed=True)
    if size_delta == 0:
        raise FieldError("value", "delta: zero size change")
    return OrderbookDelta(sid, seq, ticker, side, price, size_delta, fld.message_time(msg))


def read_snapshot(mtype: str, msg: Msg, sid: int | None, seq: int | None, use_yes_price: bool) -> OrderbookSnapshot:
    assert sid is not None  # DataReader.needs_sid
    ticker = fld.ticker(msg, "market_ticker")
    if "yes_dollars_fp" in msg or "no_dollars_fp" in msg:
        yes_key, no_key, cents = "yes_dollars_fp", "no_dollars_fp", False
    elif "yes_dollars" in msg or "no_dollars" in msg:
        yes_key, no_key, cents = "yes_dollars", "no_dollars", False
    else:
        yes_key, no_key, cents = "yes", "no", True
    yes = fld.levels(msg.get(yes_key), yes_key, cents=cents)
    no = fld.levels(msg.get(no_key), no_key, cents=cents)
    if use_yes_price:
        no = sorted((PRICE_MAX - p, s) for p, s in no)
    return OrderbookSnapshot(sid, seq, ticker, yes, no)


# ----------------------------------------------------------------------------------------------------------------
# trades and tickers


def read_trade(mtype: str, msg: Msg, sid: int | None, seq: int | None, use_yes_price: bool) -> Trade:
    trade_id = fld.name(msg, "trade_id")
    if not TRADE_ID.match(trade_id):  # any UUID spelling PostgreSQL accepts
        raise FieldError("value", f"trade_id: not a UUID: {trade_id[:40]!r}")
    ticker = fld.ticker(msg, "market_ticker")
    price = fld.price_field(msg, "yes_price_dollars", "yes_price", required=False)
    if price is None:
        no_price = fld.price_field(msg, "no_price_dollars", "no_price", required=False)
        if no_price is None:
            raise FieldError("shape", "yes_price_dollars: missing")
        price = PRICE_MAX - no_price
    size = fld.size_field(msg, "count_fp", "count")
    taker = msg.get("taker_outcome_side", msg.get("taker_side"))
    if taker is None and "taker_book_side" in msg:
        taker = "yes" if msg["taker_book_side"] == "bid" else "no"
    block = msg.get("is_block_trade", False) is True
    return Trade(sid, trade_id, ticker, fld.required_time(msg), price, size, fld.side(taker, "taker_side"), block)


def read_ticker(mtype: str, msg: Msg, sid: int | None, seq: int | None, use_yes_price: bool) -> TickerUpdate:
    return TickerUpdate(
        sid,
        fld.ticker(msg, "market_ticker"),
        fld.required_time(msg),
        fld.price_field(msg, "yes_bid_dollars", "yes_bid", required=False),
        fld.price_field(msg, "yes_ask_dollars", "yes_ask", required=False),
        fld.price_field(msg, "price_dollars", "price", required=False),
        fld.size_field(msg, "volume_fp", "volume", required=False),
        fld.size_field(msg, "open_interest_fp", "open_interest", required=False),
        fld.bounded(fld.optional_integer(msg.get("dollar_volume"), "dollar_volume"), "dollar_volume"),
        fld.bounded(
            fld.optional_integer(msg.get("dollar_open_interest"), "dollar_open_interest"), "dollar_open_interest"
        ),
        fld.size_field(msg, "yes_bid_size_fp", None, required=False),
        fld.size_field(msg, "yes_ask_size_fp", None, required=False),
        fld.size_field(msg, "last_trade_size_fp", None, required=False),
    )


# ----------------------------------------------------------------------------------------------------------------
# lifecycle and fees


def read_market_lifecycle(mtype: str, msg: Msg, sid: int | None, seq: int | None, use_yes_price: bool) -> Lifecycle:
    ticker = fld.ticker(msg, "market_ticker")
    event_type = fld.name(msg, "event_type", 64)
    ts = fld.message_time(msg)
    if ts is None and event_type in LIFECYCLE_OWN_TIME:
        ts = fld.seconds(msg, LIFECYCLE_OWN_TIME[event_type])
    return Lifecycle(sid, ticker, event_type, ts, fld.jsonb_payload(msg), mtype)


def read_event_lifecycle(mtype: str, msg: Msg, sid: int | None, seq: int | None, use_yes_price: bool) -> Lifecycle:
    ticker = fld.ticker(msg, "event_ticker")
    return Lifecycle(sid, ticker, "event_lifecycle", fld.message_time(msg), fld.jsonb_payload(msg), mtype)


def read_fee_update(mtype: str, msg: Msg, sid: int | None, seq: int | None, use_yes_price: bool) -> FeeUpdate:
    ticker = fld.ticker(msg, "event_ticker") if "event_ticker" in msg else fld.ticker(msg, "series_ticker")
    fee_type = msg.get("fee_type_override")
    if fee_type is not None and (not isinstance(fee_type, str) or len(fee_type) > 64):
        raise FieldError("value", "fee_type_override: not a fee type")
    mult = msg.get("fee_multiplier_override")
    if mult is not None and not _is_number(mult):
        raise FieldError("value", "fee_multiplier_override: not a number")
    return FeeUpdate(sid, ticker, fld.message_time(msg), fee_type, mult, fld.jsonb_payload(msg))


def _is_number(value: Any) -> bool:
    """A JSON number, or a plain decimal string of at most 8 places."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return False
    return not isinstance(value, str) or (len(value) <= NUM_MAX_LEN and fixed(value.strip(), 8) is not None)


# ----------------------------------------------------------------------------------------------------------------
# the data types: fields known (others are counted, tolerated) and reader


class DataReader(NamedTuple):
    """How a data frame's ``msg`` is read. ``needs_sid``: a frame without ``sid`` is a shape error."""

    fields: frozenset[str]
    needs_sid: bool
    read: Callable[[str, Msg, int | None, int | None, bool], Record]


_DELTA_FIELDS = frozenset(
    (
        "market_ticker",
        "market_id",
        "price_dollars",
        "delta_fp",
        "side",
        "ts",
        "ts_ms",
        "client_order_id",
        "subaccount",
        "price",
        "delta",
    )
)
_SNAPSHOT_FIELDS = frozenset(
    ("market_ticker", "market_id", "yes_dollars_fp", "no_dollars_fp", "yes", "no", "yes_dollars", "no_dollars")
)
_TRADE_FIELDS = frozenset(
    (
        "trade_id",
        "market_ticker",
        "yes_price_dollars",
        "no_price_dollars",
        "count_fp",
        "taker_side",
        "taker_outcome_side",
        "taker_book_side",
        "is_block_trade",
        "ts_ms",
        "ts",
        "yes_price",
        "no_price",
        "count",
        "price",
        "created_time",
    )
)
_TICKER_FIELDS = frozenset(
    (
        "market_ticker",
        "market_id",
        "price_dollars",
        "yes_bid_dollars",
        "yes_ask_dollars",
        "volume_fp",
        "open_interest_fp",
        "dollar_volume",
        "dollar_open_interest",
        "yes_bid_size_fp",
        "yes_ask_size_fp",
        "last_trade_size_fp",
        "ts_ms",
        "ts",
        "time",
        "Clock",
        "price",
        "yes_bid",
        "yes_ask",
        "volume",
        "open_interest",
    )
)
_LIFECYCLE_FIELDS = frozenset(
    (
        "market_ticker",
        "event_type",
        "exchange_index",
        "open_ts",
        "close_ts",
        "result",
        "determination_ts",
        "settlement_value",
        "settled_ts",
        "is_deactivated",
        "price_level_structure",
        "price_ranges",
        "strikes",
        "additional_metadata",
        "ts_ms",
        "ts",
    )
)
_EVENT_FIELDS = frozenset(
    (
        "event_ticker",
        "exchange_index",
        "title",
        "subtitle",
        "collateral_return_type",
        "series_ticker",
        "strike_date",
        "strike_period",
        "ts_ms",
        "ts",
    )
)
_FEE_FIELDS = frozenset(
    ("event_ticker", "series_ticker", "fee_type_override", "fee_multiplier_override", "ts_ms", "ts")
)

DATA_READERS: dict[str, DataReader] = {
    "orderbook_delta": DataReader(_DELTA_FIELDS, True, read_delta),
    "ticker": DataReader(_TICKER_FIELDS, False, read_ticker),
    "trade": DataReader(_TRADE_FIELDS, False, read_trade),
    "orderbook_snapshot": DataReader(_SNAPSHOT_FIELDS, True, read_snapshot),
    **{mtype: DataReader(_LIFECYCLE_FIELDS, False, read_market_lifecycle) for mtype in LIFECYCLE_TYPES},
    "event_lifecycle": DataReader(_EVENT_FIELDS, False, read_event_lifecycle),
    "event_fee_update": DataReader(_FEE_FIELDS, False, read_fee_update),
}


# ----------------------------------------------------------------------------------------------------------------
# replies to commands: read from the whole frame (``id`` is beside ``msg``)


def read_subscribed(mtype: str, frame: Msg, sid: int | None, seq: int | None) -> Subscribed:
    msg = frame_msg(frame)
    channel = msg.get("channel", "")
    if not isinstance(channel, str) or len(channel) > 64:
        raise FieldError("value", "channel: not a channel name")
    return Subscribed(fld.optional_id(frame.get("id")), channel, fld.identifier(msg.get("sid"), "sid"))


def read_ack(mtype: str, frame: Msg, sid: int | None, seq: int | None) -> Ack:
    return Ack(mtype, fld.optional_id(frame.get("id")), sid, seq, frame.get("msg"))


def read_error(mtype: str, frame: Msg, sid: int | None, seq: int | None) -> ErrorMsg:
    msg = frame.get("msg") or {}
    if not isinstance(msg, dict):
        raise FieldError("shape", "error msg: not an object")
    code = fld.optional_integer(msg.get("code"), "code") or 0
    if not 0 <= code < 2**31:
        raise FieldError("value", "code: out of range")
    mt = msg.get("market_ticker")
    return ErrorMsg(
        fld.optional_id(frame.get("id")),
        code,
        str(msg.get("msg", ""))[:500],
        mt if isinstance(mt, str) and is_ticker(mt) else None,
    )


REPLY_READERS: dict[str, Callable[[str, Msg, int | None, int | None], Record]] = {
    "subscribed": read_subscribed,
    "ok": read_ack,
    "unsubscribed": read_ack,
    "error": read_error,
}


def frame_msg(frame: Msg) -> Msg:
    """The frame's ``msg`` object."""
    msg = frame.get("msg")
    if not isinstance(msg, dict):
        raise FieldError("shape", "msg: missing or not an object")
    return msg
