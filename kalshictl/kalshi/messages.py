"""Parse Kalshi WebSocket frames into typed records, in kalshictl's exact integer units.

Accepts the current fixed-point shapes (``price_dollars`` / ``delta_fp`` / ``yes_dollars_fp`` ...) and the legacy
integer-cent shapes recorded before 2026-03-12 (``price`` / ``delta`` / ``yes`` ...); numeric values may arrive as
JSON numbers or strings. :meth:`Parser.parse` never raises: bad input (malformed JSON, unknown type, missing or
out-of-range values) comes back as a :class:`ParseError` with a ``kind`` (json | shape | type | value) that callers
count; ``internal`` would mean a parser bug and the fuzz tests fail on it. Unknown *fields* are tolerated (Kalshi
adds fields) and reported in :attr:`Parser.unknown_fields` so they show up in metrics (at most
:data:`UNKNOWN_FIELDS_MAX` names, the rest under ``"(other)"``). Every numeric value is bounded before any arithmetic
(:mod:`kalshictl.units`) and every ticker obeys the REST rule (:mod:`kalshictl.kalshi.validate`), so a hostile frame
costs microseconds and is refused (docs/security.md, "Bad input and what it gets").

Two paths, one answer:

* **fast path** (the hot types: ``orderbook_delta``, ``orderbook_snapshot``, ``trade``, ``ticker`` in their current
  shape): ``msgspec`` decodes the frame straight into typed structs (tagged on ``type``), validating types, bounds
  and enumerations in compiled code, and refusing unknown fields; prices go through a table of every price string
  seen (at most 10,001 values, pre-filled with the 4-decimal forms), sizes through integer arithmetic on the string.
* **reference path** (everything else: legacy shapes, numbers given as strings, unknown fields, lifecycle and
  control frames, and every frame the fast path declines): ``orjson`` + per-field checks in Python.

The fast path only ever *accepts* a frame the reference path would turn into the same record (tests/gatherer/
test_parser_fuzz.py checks the two against each other on mutated frames); whenever any fast check fails the frame
is handed to the reference path, which gives the authoritative record or error.

Units: prices in ten-thousandths of a dollar, sizes in hundredths of a contract, times in microseconds
(see :mod:`kalshictl.units`). ``side``/``taker_side`` are booleans, ``True`` = YES.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Annotated, Any, Literal

import msgspec
import orjson
from msgspec import UNSET, Meta, Struct, UnsetType

from kalshictl.kalshi.validate import TRADE_ID, is_ticker, ticker_problem
from kalshictl.units import (
    MAX_NUMBER_CHARS,
    PRICE_MAX,
    SIZE_LIMIT,
    TS_US_LIMIT,
    UnitError,
    parse_cents,
    parse_price,
    parse_size,
    rfc3339_us,
)

# ----------------------------------------------------------------------------------------------------------------
# records (msgspec Structs: positional construction and equality like the dataclasses they replace, cheaper)


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
    """A command error (code per kalshi-api.md §4)."""

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
ERROR_KINDS = ("json", "shape", "type", "value")

# Codes that end a subscription (resubscribe): 10 channel error, 17 internal, 25 buffer overflow.
TERMINAL_ERROR_CODES = frozenset((10, 17, 25))

LIFECYCLE_TYPES = ("market_lifecycle_v2", "multivariate_market_lifecycle")

ID_MAX = 2**63  # sid / seq / id: PostgreSQL bigint, never negative
_BIGINT = SIZE_LIMIT  # sizes and volumes: |value| below this (bigint with headroom for sums)
TS_US_MAX = TS_US_LIMIT  # exchange times (µs): ts_ms below 2**53
UNKNOWN_FIELDS_MAX = 1000  # distinct unknown field names remembered; the rest are counted under "(other)"
_TS_S_MAX = 2**43  # legacy integer ``ts`` in seconds


class _Bad(Exception):
    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


# ----------------------------------------------------------------------------------------------------------------
# exact value parsing

_DIGITS = frozenset("0123456789")
_INT = re.compile(r"-?[0-9]{1,19}")
_NUM_MAX_LEN = MAX_NUMBER_CHARS  # longer numeric strings are refused before any conversion


def _fixed(text: str, places: int) -> int | None:
    """Exact ``text`` * 10**places for plain decimal strings, else None (caller falls back)."""
    if len(text) > _NUM_MAX_LEN:
        return None
    neg = text.startswith("-")
    body = text[1:] if neg else text
    whole, dot, frac = body.partition(".")
    if not whole or len(frac) > places or not _DIGITS.issuperset(whole) or not _DIGITS.issuperset(frac):
        return None
    if dot and not frac:
        return None
    value = int(whole) * 10**places + (int(frac.ljust(places, "0")) if frac else 0)
    return -value if neg else value


# Every price string seen -> ten-thousandths. Pre-filled with the canonical 4-decimal forms; other spellings of the
# same 10,001 prices ("0.96", "0.960") are added as they appear, up to the bound.
_PRICE_CACHE: dict[str, int] = {f"{p // 10_000}.{p % 10_000:04d}": p for p in range(PRICE_MAX + 1)}
_PRICE_CACHE[None] = None  # type: ignore[index, assignment]  # an absent optional price, for the fast path
_PRICE_CACHE_MAX = 60_000


def price_value(value: Any) -> int:
    """A dollar price (string or number) -> ten-thousandths, within [0, 1] (raises UnitError)."""
    if isinstance(value, str):
        cached = _PRICE_CACHE.get(value)
        if cached is not None:
            return cached
        fast = _fixed(value, 4)
        if fast is not None and 0 <= fast <= PRICE_MAX:
            if len(_PRICE_CACHE) < _PRICE_CACHE_MAX:
                _PRICE_CACHE[value] = fast
            return fast
        if len(value) > _NUM_MAX_LEN:
            raise UnitError(f"price: {value[:20]!r}...: too long")
    return parse_price(value)


def size_value(value: Any, *, signed: bool = False) -> int:
    """A contract count (string or number) -> hundredths, |size| < 2**62 (raises UnitError)."""
    if isinstance(value, str):
        fast = _fixed(value, 2)
        if fast is None and len(value) > _NUM_MAX_LEN:
            raise UnitError(f"size: {value[:20]!r}...: too long")
    elif isinstance(value, int) and not isinstance(value, bool):
        fast = value * 100
    else:
        fast = None
    if fast is None:
        fast = parse_size(value, signed=signed)
    if fast < 0 and not signed:
        raise UnitError(f"size: {value!r} is negative")
    if not -_BIGINT < fast < _BIGINT:
        raise UnitError(f"size: {value!r} out of range")
    return fast


# Size strings seen -> hundredths (bounded): counts (>= 0) and delta changes (signed, never 0) separately.
_SIZE_CACHE: dict[str | None, int | None] = {None: None}  # None: an absent optional size, for the fast path
_DELTA_CACHE: dict[str, int] = {}
_SIZE_CACHE_MAX = 50_000


def _size_str(s: str, signed: bool) -> int | None:
    """Exact hundredths of a size string, or None when it is not a valid size (caller declines); a delta change
    (``signed``) of 0 is not valid. Valid values are remembered (bounded) for the next frames."""
    cache = _DELTA_CACHE if signed else _SIZE_CACHE
    v = cache.get(s)
    if v is not None:
        return v
    v = _size_compute(s, signed)
    if v is None or not -_BIGINT < v < _BIGINT or (signed and v == 0):
        return None
    if len(cache) < _SIZE_CACHE_MAX:
        cache[s] = v
    return v


def _size_compute(s: str, signed: bool) -> int | None:
    if s[-3:-2] == "." and s.isascii():
        body = s[:-3] + s[-2:]
        if body.isdecimal():
            v = int(body) if len(body) < 19 else None
        elif signed and body[:1] == "-" and body[1:].isdecimal():
            v = -int(body[1:]) if len(body) < 20 else None
        else:
            v = None
        if v is not None:
            return v
    try:
        return size_value(s, signed=signed)
    except UnitError:
        return None


def _price_str(s: str) -> int | None:
    v = _PRICE_CACHE.get(s)
    if v is not None:
        return v
    try:
        return price_value(s)
    except UnitError:
        return None


# Tickers that passed the rule (bounded): the fast path's check is then one set lookup, not the rule again.
_GOOD_TICKERS: set[str] = set()
_GOOD_TICKERS_MAX = 65_536


def _ticker_ok(ticker: str) -> bool:
    """:func:`~kalshictl.kalshi.validate.is_ticker`, remembered for the next frames (bounded)."""
    if ticker in _GOOD_TICKERS:
        return True
    if not is_ticker(ticker):
        return False
    if len(_GOOD_TICKERS) < _GOOD_TICKERS_MAX:
        _GOOD_TICKERS.add(ticker)
    return True


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise _Bad("value", f"{what}: expected an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _INT.fullmatch(value):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise _Bad("value", f"{what}: expected an integer, got {str(value)[:40]!r}")


def _opt_int(value: Any, what: str) -> int | None:
    return None if value is None else _int(value, what)


def _id(value: Any, what: str) -> int:
    """A sid / seq / command id: a non-negative bigint."""
    v = _int(value, what)
    if not 0 <= v < ID_MAX:
        raise _Bad("value", f"{what}: out of range")
    return v


_UUID_CANON = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")  # fast path: canonical
_UUID = TRADE_ID  # any UUID spelling PostgreSQL accepts (match: anchored at both ends)


def _str(msg: dict, key: str, max_len: int = 128) -> str:
    """A non-empty identifier that PostgreSQL will accept (no NUL, fits its varchar column)."""
    value = msg.get(key)
    if not isinstance(value, str) or not value:
        raise _Bad("shape", f"{key}: missing or not a string")
    if len(value) > max_len or "\x00" in value:
        raise _Bad("value", f"{key}: too long or contains NUL")
    return value


def _ticker(msg: dict, key: str) -> str:
    """A market/event/series ticker: the REST rule (:func:`kalshictl.kalshi.validate.ticker_problem`)."""
    value = msg.get(key)
    if not isinstance(value, str) or not value:
        raise _Bad("shape", f"{key}: missing or not a string")
    if not is_ticker(value):
        raise _Bad("value", f"{key}: {ticker_problem(value)}")
    return value


def _bounded(value: int | None, what: str) -> int | None:
    if value is not None and not -_BIGINT < value < _BIGINT:
        raise _Bad("value", f"{what}: out of range")
    return value


def _side(value: Any, what: str = "side") -> bool:
    if value == "yes" or value is True:
        return True
    if value == "no" or value is False:
        return False
    raise _Bad("value", f"{what}: expected yes|no, got {str(value)[:40]!r}")


def _rfc3339_us(ts: str) -> int:
    """An RFC 3339 time in microseconds; a time without a zone is UTC (never the host's local time)."""
    try:
        return rfc3339_us(ts)
    except UnitError:
        raise _Bad("value", f"ts: not RFC3339 or out of range: {ts[:40]!r}") from None


def _ts_us(msg: dict) -> int | None:
    """Exchange time in µs: ``ts_ms`` (canonical) or the legacy ``ts`` (RFC3339 on deltas, else seconds); None if
    the message has neither."""
    ts_ms = msg.get("ts_ms")
    if ts_ms is not None:
        value = _int(ts_ms, "ts_ms")
        if not 0 <= value < 2**53:
            raise _Bad("value", "ts_ms: out of range")
        return value * 1000
    ts = msg.get("ts")
    if isinstance(ts, str) and not _INT.fullmatch(ts):
        return _rfc3339_us(ts)
    if ts is not None:
        value = _int(ts, "ts")
        if not 0 <= value < _TS_S_MAX:
            raise _Bad("value", "ts: out of range")
        return value * 1_000_000
    return None


def _required_ts(msg: dict) -> int:
    ts = _ts_us(msg)
    if ts is None:
        raise _Bad("shape", "ts_ms: missing")
    return ts


def _seconds(msg: dict, key: str) -> int | None:
    value = msg.get(key)
    if value is None:
        return None
    v = _int(value, key)
    if not 0 <= v < _TS_S_MAX:
        raise _Bad("value", f"{key}: out of range")
    return v * 1_000_000


def _price_field(msg: dict, dollars: str, cents: str | None, *, required: bool = True) -> int | None:
    try:
        value = msg.get(dollars)
        if value is not None:
            return price_value(value)
        if cents is not None:
            value = msg.get(cents)
            if value is not None:
                return parse_cents(value)
    except UnitError as exc:
        raise _Bad("value", str(exc)[:160]) from None
    if required:
        raise _Bad("shape", f"{dollars}: missing")
    return None


def _size_field(msg: dict, fp: str, legacy: str | None, *, required: bool = True, signed: bool = False) -> int | None:
    try:
        value = msg.get(fp)
        if value is not None:
            return size_value(value, signed=signed)
        if legacy is not None:
            value = msg.get(legacy)
            if value is not None:
                return size_value(value, signed=signed)
    except UnitError as exc:
        raise _Bad("value", str(exc)[:160]) from None
    if required:
        raise _Bad("shape", f"{fp}: missing")
    return None


def _clean_payload(msg: dict) -> dict:
    """A payload PostgreSQL's jsonb accepts (no NUL characters anywhere, serialisable)."""
    try:
        dumped = orjson.dumps(msg)
    except orjson.JSONEncodeError:
        raise _Bad("value", "payload: nested too deep to store") from None
    if b"\\u0000" in dumped:
        raise _Bad("value", "payload contains NUL")
    return msg


def _levels(raw: Any, what: str, *, cents: bool) -> list[tuple[int, int]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise _Bad("shape", f"{what}: expected a list of [price, size]")
    out: dict[int, int] = {}
    for level in raw:
        if not isinstance(level, list | tuple) or len(level) != 2:
            raise _Bad("shape", f"{what}: level {str(level)[:40]} is not [price, size]")
        try:
            price = parse_cents(level[0]) if cents else price_value(level[0])
            size = size_value(level[1])
        except UnitError as exc:
            raise _Bad("value", f"{what}: {exc}"[:160]) from None
        out[price] = size
    return sorted(out.items())


# ----------------------------------------------------------------------------------------------------------------
# fast path: typed structs decoded in compiled code

_Ticker = Annotated[str, Meta(min_length=1, max_length=128)]
_Id = Annotated[int, Meta(ge=0, le=ID_MAX - 1)]
_TsMs = Annotated[int, Meta(ge=0, lt=2**53)]
_Big = Annotated[int, Meta(gt=-_BIGINT, lt=_BIGINT)]


class _DeltaMsg(Struct, forbid_unknown_fields=True, gc=False):
    market_ticker: _Ticker
    price_dollars: str
    delta_fp: str
    side: Literal["yes", "no"]
    ts_ms: _TsMs | None = None
    ts: Any = None
    market_id: Any = None
    client_order_id: Any = None
    subaccount: Any = None


class _DeltaFrame(Struct, tag_field="type", tag="orderbook_delta", gc=False):
    sid: _Id
    seq: _Id
    msg: _DeltaMsg


class _SnapMsg(Struct, forbid_unknown_fields=True, gc=False):
    market_ticker: _Ticker
    yes_dollars_fp: list[tuple[str, str]] | UnsetType | None = UNSET
    no_dollars_fp: list[tuple[str, str]] | UnsetType | None = UNSET
    market_id: Any = None


class _SnapFrame(Struct, tag_field="type", tag="orderbook_snapshot", gc=False):
    sid: _Id
    seq: _Id
    msg: _SnapMsg


class _TradeMsg(Struct, forbid_unknown_fields=True, gc=False):
    trade_id: str
    market_ticker: _Ticker
    count_fp: str
    ts_ms: _TsMs
    yes_price_dollars: str | None = None
    no_price_dollars: str | None = None
    taker_side: str | UnsetType = UNSET
    taker_outcome_side: str | UnsetType = UNSET
    taker_book_side: Any = None
    is_block_trade: Any = False
    ts: Any = None


class _TradeFrame(Struct, tag_field="type", tag="trade", gc=False):
    msg: _TradeMsg
    sid: _Id | None = None


class _TickerMsg(Struct, forbid_unknown_fields=True, gc=False):
    market_ticker: _Ticker
    ts_ms: _TsMs
    price_dollars: str | None = None
    yes_bid_dollars: str | None = None
    yes_ask_dollars: str | None = None
    volume_fp: str | None = None
    open_interest_fp: str | None = None
    dollar_volume: _Big | None = None
    dollar_open_interest: _Big | None = None
    yes_bid_size_fp: str | None = None
    yes_ask_size_fp: str | None = None
    last_trade_size_fp: str | None = None
    market_id: Any = None
    ts: Any = None
    time: Any = None
    Clock: Any = None


class _TickerFrame(Struct, tag_field="type", tag="ticker", gc=False):
    msg: _TickerMsg
    sid: _Id | None = None


_FAST = msgspec.json.Decoder(_DeltaFrame | _TickerFrame | _TradeFrame | _SnapFrame)
_FAST_DECLINED = (msgspec.DecodeError, TypeError)  # ValidationError is a DecodeError


def _opt_price(s: str | None) -> int | bool | None:
    """None -> None; a valid price -> int; invalid -> False (decline)."""
    if s is None:
        return None
    v = _PRICE_CACHE.get(s)
    if v is not None:
        return v
    v = _price_str(s)
    return False if v is None else v


def _opt_size(s: str | None) -> int | bool | None:
    if s is None:
        return None
    v = _SIZE_CACHE.get(s)
    if v is not None:
        return v
    v = _size_str(s, False)
    return False if v is None else v


# ----------------------------------------------------------------------------------------------------------------
# reference path field lists

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
# The event's own time, for the event types that have one (never open_ts/close_ts: the market's schedule).
LIFECYCLE_OWN_TIME = {"settled": "settled_ts", "determined": "determination_ts"}


class Parser:
    """Frame parser with counters; ``use_yes_price`` undoes the subscription flag for NO-side prices."""

    def __init__(self, *, use_yes_price: bool = False) -> None:
        self.use_yes_price = use_yes_price
        self.unknown_fields: Counter[str] = Counter()
        self.unknown_total = 0  # sum of unknown_fields (read per frame by the router)
        self.errors: Counter[str] = Counter()
        self.slow = 0  # frames parsed by the reference path (declined by the fast path, or not a hot type)

    def parse(self, raw: bytes | str) -> Record | ParseError:
        """Parse one text frame; never raises."""
        try:
            f = _FAST.decode(raw)
        except Exception:  # declined (msgspec.DecodeError / ValidationError, TypeError): the reference path answers
            return self.parse_reference(raw)
        try:  # zero-cost unless raised: a value that upsets the fast path goes to the reference path
            t = type(f)
            if t is _DeltaFrame:  # the common case, inline: every value from a table of values already validated
                m = f.msg
                try:
                    price = _PRICE_CACHE[m.price_dollars]
                    size = _DELTA_CACHE[m.delta_fp]
                except KeyError:
                    rec = self._fast_delta(f)
                else:
                    ts = m.ts_ms
                    ticker = m.market_ticker
                    if ts is not None and (ticker in _GOOD_TICKERS or _ticker_ok(ticker)):
                        if m.side == "yes":
                            return OrderbookDelta(f.sid, f.seq, ticker, True, price, size, ts * 1000)
                        if self.use_yes_price:
                            price = PRICE_MAX - price
                        return OrderbookDelta(f.sid, f.seq, ticker, False, price, size, ts * 1000)
                    rec = self._fast_delta(f)
            elif t is _TickerFrame:
                m = f.msg
                P = _PRICE_CACHE
                S = _SIZE_CACHE
                try:
                    rec = TickerUpdate(
                        f.sid,
                        m.market_ticker,
                        m.ts_ms * 1000,
                        P[m.yes_bid_dollars],
                        P[m.yes_ask_dollars],
                        P[m.price_dollars],
                        S[m.volume_fp],
                        S[m.open_interest_fp],
                        m.dollar_volume,
                        m.dollar_open_interest,
                        S[m.yes_bid_size_fp],
                        S[m.yes_ask_size_fp],
                        S[m.last_trade_size_fp],
                    )
                except KeyError:
                    rec = self._fast_ticker(f)
                else:
                    if not (rec.ticker in _GOOD_TICKERS or _ticker_ok(rec.ticker)):
                        rec = None
            elif t is _TradeFrame:
                m = f.msg
                tid = m.trade_id
                taker = m.taker_outcome_side
                if taker is UNSET:
                    taker = m.taker_side
                try:
                    price = _PRICE_CACHE[m.yes_price_dollars]
                    size = _SIZE_CACHE[m.count_fp]
                except KeyError:
                    price = None
                if (
                    price is not None
                    and size is not None
                    and (taker == "yes" or taker == "no")
                    and _UUID_CANON.match(tid)
                    and (m.market_ticker in _GOOD_TICKERS or _ticker_ok(m.market_ticker))
                ):
                    return Trade(
                        f.sid,
                        tid,
                        m.market_ticker,
                        m.ts_ms * 1000,
                        price,
                        size,
                        taker == "yes",
                        m.is_block_trade is True,
                    )
                rec = self._fast_trade(f)
            else:
                rec = self._fast_snapshot(f)
            if rec is None:
                return self.parse_reference(raw)
            return rec
        except Exception:
            return self.parse_reference(raw)

    # ----- fast path: None = decline (the reference path answers) ----------------------------------------------
    def _fast_delta(self, f: _DeltaFrame) -> OrderbookDelta | None:
        m = f.msg
        ticker = m.market_ticker
        if not _ticker_ok(ticker):
            return None
        side = m.side
        if side == "yes":
            yes = True
        elif side == "no":
            yes = False
        else:
            return None
        price = _PRICE_CACHE.get(m.price_dollars)
        if price is None:
            price = _price_str(m.price_dollars)
            if price is None:
                return None
        size = _size_str(m.delta_fp, True)
        if size is None:
            return None
        ts = m.ts_ms
        if ts is None:
            if m.ts is not None:
                return None  # legacy ts: the reference path reads it
        else:
            ts *= 1000
        if self.use_yes_price and not yes:
            price = PRICE_MAX - price
        return OrderbookDelta(f.sid, f.seq, ticker, yes, price, size, ts)

    def _fast_ticker(self, f: _TickerFrame) -> TickerUpdate | None:
        m = f.msg
        ticker = m.market_ticker
        if not _ticker_ok(ticker):
            return None
        bid = _opt_price(m.yes_bid_dollars)
        ask = _opt_price(m.yes_ask_dollars)
        last = _opt_price(m.price_dollars)
        vol = _opt_size(m.volume_fp)
        oi = _opt_size(m.open_interest_fp)
        bsz = _opt_size(m.yes_bid_size_fp)
        asz = _opt_size(m.yes_ask_size_fp)
        lsz = _opt_size(m.last_trade_size_fp)
        if (
            bid is False
            or ask is False
            or last is False
            or vol is False
            or oi is False
            or bsz is False
            or asz is False
            or lsz is False
        ):
            return None
        return TickerUpdate(
            f.sid,
            ticker,
            m.ts_ms * 1000,
            bid,  # type: ignore[arg-type]
            ask,  # type: ignore[arg-type]
            last,  # type: ignore[arg-type]
            vol,  # type: ignore[arg-type]
            oi,  # type: ignore[arg-type]
            m.dollar_volume,
            m.dollar_open_interest,
            bsz,  # type: ignore[arg-type]
            asz,  # type: ignore[arg-type]
            lsz,  # type: ignore[arg-type]
        )

    def _fast_trade(self, f: _TradeFrame) -> Trade | None:
        m = f.msg
        ticker = m.market_ticker
        tid = m.trade_id
        if not _ticker_ok(ticker) or len(tid) > 128 or not _UUID.match(tid):
            return None
        if m.yes_price_dollars is not None:
            price = _price_str(m.yes_price_dollars)
        elif m.no_price_dollars is not None:
            price = _price_str(m.no_price_dollars)
            if price is not None:
                price = PRICE_MAX - price
        else:
            return None
        if price is None:
            return None
        size = _size_str(m.count_fp, False)
        if size is None:
            return None
        taker = m.taker_outcome_side if m.taker_outcome_side is not UNSET else m.taker_side
        if taker == "yes":
            yes = True
        elif taker == "no":
            yes = False
        else:
            return None
        return Trade(f.sid, tid, ticker, m.ts_ms * 1000, price, size, yes, m.is_block_trade is True)

    def _fast_snapshot(self, f: _SnapFrame) -> OrderbookSnapshot | None:
        m = f.msg
        if not _ticker_ok(m.market_ticker) or (m.yes_dollars_fp is UNSET and m.no_dollars_fp is UNSET):
            return None
        sides = []
        for levels in (m.yes_dollars_fp, m.no_dollars_fp):
            out: dict[int, int] = {}
            if levels:
                for p, s in levels:  # type: ignore[union-attr]
                    price = _PRICE_CACHE.get(p)
                    if price is None:
                        price = _price_str(p)
                        if price is None:
                            return None
                    size = _size_str(s, False)
                    if size is None:
                        return None
                    out[price] = size
            sides.append(sorted(out.items()))
        yes, no = sides
        if self.use_yes_price:
            no = sorted((PRICE_MAX - p, s) for p, s in no)
        return OrderbookSnapshot(f.sid, f.seq, m.market_ticker, yes, no)

    # ----- reference path ---------------------------------------------------------------------------------------
    def _unknown(self, mtype: str, msg: dict, known: frozenset[str]) -> None:
        if not known.issuperset(msg):
            seen = self.unknown_fields
            for key in msg:
                if key not in known:
                    name = f"{mtype}.{key[:64]}"
                    seen[name if name in seen or len(seen) < UNKNOWN_FIELDS_MAX else "(other)"] += 1
                    self.unknown_total += 1

    def parse_reference(self, raw: bytes | str) -> Record | ParseError:
        """Parse one frame with the reference (pure Python) path; never raises."""
        self.slow += 1
        try:
            frame = orjson.loads(raw)
        except (orjson.JSONDecodeError, TypeError, ValueError) as exc:
            self.errors["json"] += 1
            return ParseError("json", str(exc)[:120])
        if not isinstance(frame, dict):
            self.errors["shape"] += 1
            return ParseError("shape", "frame is not a JSON object")
        sid = frame.get("sid")
        seq = frame.get("seq")
        mtype = frame.get("type")
        try:
            if sid is not None:
                sid = _id(sid, "sid")
            if seq is not None:
                seq = _id(seq, "seq")
            return self._dispatch(mtype, frame, sid, seq)
        except _Bad as exc:
            self.errors[exc.kind] += 1
            return ParseError(
                exc.kind,
                exc.detail,
                sid if isinstance(sid, int) and 0 <= sid < ID_MAX else None,
                seq if isinstance(seq, int) and 0 <= seq < ID_MAX else None,
                mtype[:64] if isinstance(mtype, str) else None,
            )
        except Exception as exc:  # defensive: a parser bug must never take the gatherer down
            self.errors["internal"] += 1
            return ParseError("internal", f"{type(exc).__name__}: {exc}"[:160], None, None, None)

    def _msg(self, frame: dict) -> dict:
        msg = frame.get("msg")
        if not isinstance(msg, dict):
            raise _Bad("shape", "msg: missing or not an object")
        return msg

    def _dispatch(self, mtype: Any, frame: dict, sid: int | None, seq: int | None) -> Record:
        if mtype == "orderbook_delta":
            return self._delta(self._msg(frame), sid, seq)
        if mtype == "ticker":
            return self._ticker(self._msg(frame), sid)
        if mtype == "trade":
            return self._trade(self._msg(frame), sid)
        if mtype == "orderbook_snapshot":
            return self._snapshot(self._msg(frame), sid, seq)
        if mtype in LIFECYCLE_TYPES:
            return self._lifecycle(mtype, self._msg(frame), sid)
        if mtype == "event_lifecycle":
            return self._event_lifecycle(self._msg(frame), sid)
        if mtype == "event_fee_update":
            return self._fee_update(self._msg(frame), sid)
        if mtype == "subscribed":
            msg = self._msg(frame)
            channel = msg.get("channel", "")
            if not isinstance(channel, str) or len(channel) > 64:
                raise _Bad("value", "channel: not a channel name")
            return Subscribed(_opt_id(frame.get("id")), channel, _id(msg.get("sid"), "sid"))
        if mtype in ("ok", "unsubscribed"):
            return Ack(mtype, _opt_id(frame.get("id")), sid, seq, frame.get("msg"))
        if mtype == "error":
            msg = frame.get("msg") or {}
            if not isinstance(msg, dict):
                raise _Bad("shape", "error msg: not an object")
            code = _opt_int(msg.get("code"), "code") or 0
            if not 0 <= code < 2**31:
                raise _Bad("value", "code: out of range")
            mt = msg.get("market_ticker")
            return ErrorMsg(
                _opt_id(frame.get("id")),
                code,
                str(msg.get("msg", ""))[:500],
                mt if isinstance(mt, str) and is_ticker(mt) else None,
            )
        raise _Bad("type", f"unknown message type {str(mtype)[:64]!r}")

    def _delta(self, msg: dict, sid: int | None, seq: int | None) -> OrderbookDelta:
        if sid is None:
            raise _Bad("shape", "orderbook_delta without sid")
        self._unknown("orderbook_delta", msg, _DELTA_FIELDS)
        ticker = _ticker(msg, "market_ticker")
        side = _side(msg.get("side"))
        price = _price_field(msg, "price_dollars", "price")
        if self.use_yes_price and not side:
            price = PRICE_MAX - price  # type: ignore[operator]
        size_delta = _size_field(msg, "delta_fp", "delta", signed=True)
        if size_delta == 0:
            raise _Bad("value", "delta: zero size change")
        return OrderbookDelta(sid, seq, ticker, side, price, size_delta, _ts_us(msg))  # type: ignore[arg-type]

    def _snapshot(self, msg: dict, sid: int | None, seq: int | None) -> OrderbookSnapshot:
        if sid is None:
            raise _Bad("shape", "orderbook_snapshot without sid")
        self._unknown("orderbook_snapshot", msg, _SNAPSHOT_FIELDS)
        ticker = _ticker(msg, "market_ticker")
        if "yes_dollars_fp" in msg or "no_dollars_fp" in msg:
            yes = _levels(msg.get("yes_dollars_fp"), "yes_dollars_fp", cents=False)
            no = _levels(msg.get("no_dollars_fp"), "no_dollars_fp", cents=False)
        elif "yes_dollars" in msg or "no_dollars" in msg:
            yes = _levels(msg.get("yes_dollars"), "yes_dollars", cents=False)
            no = _levels(msg.get("no_dollars"), "no_dollars", cents=False)
        else:
            yes = _levels(msg.get("yes"), "yes", cents=True)
            no = _levels(msg.get("no"), "no", cents=True)
        if self.use_yes_price:
            no = sorted((PRICE_MAX - p, s) for p, s in no)
        return OrderbookSnapshot(sid, seq, ticker, yes, no)

    def _trade(self, msg: dict, sid: int | None) -> Trade:
        self._unknown("trade", msg, _TRADE_FIELDS)
        trade_id = _str(msg, "trade_id")
        if not _UUID.match(trade_id):
            raise _Bad("value", f"trade_id: not a UUID: {trade_id[:40]!r}")
        ticker = _ticker(msg, "market_ticker")
        price = _price_field(msg, "yes_price_dollars", "yes_price", required=False)
        if price is None:
            no_price = _price_field(msg, "no_price_dollars", "no_price", required=False)
            if no_price is None:
                raise _Bad("shape", "yes_price_dollars: missing")
            price = PRICE_MAX - no_price
        size = _size_field(msg, "count_fp", "count")
        taker = msg.get("taker_outcome_side", msg.get("taker_side"))
        if taker is None and "taker_book_side" in msg:
            taker = "yes" if msg["taker_book_side"] == "bid" else "no"
        block = msg.get("is_block_trade", False)
        return Trade(sid, trade_id, ticker, _required_ts(msg), price, size, _side(taker, "taker_side"), block is True)  # type: ignore[arg-type]

    def _ticker(self, msg: dict, sid: int | None) -> TickerUpdate:
        self._unknown("ticker", msg, _TICKER_FIELDS)
        return TickerUpdate(
            sid,
            _ticker(msg, "market_ticker"),
            _required_ts(msg),
            _price_field(msg, "yes_bid_dollars", "yes_bid", required=False),
            _price_field(msg, "yes_ask_dollars", "yes_ask", required=False),
            _price_field(msg, "price_dollars", "price", required=False),
            _size_field(msg, "volume_fp", "volume", required=False),
            _size_field(msg, "open_interest_fp", "open_interest", required=False),
            _bounded(_opt_int(msg.get("dollar_volume"), "dollar_volume"), "dollar_volume"),
            _bounded(_opt_int(msg.get("dollar_open_interest"), "dollar_open_interest"), "dollar_open_interest"),
            _size_field(msg, "yes_bid_size_fp", None, required=False),
            _size_field(msg, "yes_ask_size_fp", None, required=False),
            _size_field(msg, "last_trade_size_fp", None, required=False),
        )

    def _lifecycle(self, mtype: str, msg: dict, sid: int | None) -> Lifecycle:
        self._unknown(mtype, msg, _LIFECYCLE_FIELDS)
        ticker = _ticker(msg, "market_ticker")
        event_type = _str(msg, "event_type", 64)
        ts = _ts_us(msg)
        if ts is None and event_type in LIFECYCLE_OWN_TIME:
            ts = _seconds(msg, LIFECYCLE_OWN_TIME[event_type])
        return Lifecycle(sid, ticker, event_type, ts, _clean_payload(msg), mtype)

    def _event_lifecycle(self, msg: dict, sid: int | None) -> Lifecycle:
        self._unknown("event_lifecycle", msg, _EVENT_FIELDS)
        ticker = _ticker(msg, "event_ticker")
        return Lifecycle(sid, ticker, "event_lifecycle", _ts_us(msg), _clean_payload(msg), "event_lifecycle")

    def _fee_update(self, msg: dict, sid: int | None) -> FeeUpdate:
        self._unknown("event_fee_update", msg, _FEE_FIELDS)
        ticker = _ticker(msg, "event_ticker") if "event_ticker" in msg else _ticker(msg, "series_ticker")
        fee_type = msg.get("fee_type_override")
        if fee_type is not None and (not isinstance(fee_type, str) or len(fee_type) > 64):
            raise _Bad("value", "fee_type_override: not a fee type")
        mult = msg.get("fee_multiplier_override")
        if mult is not None:
            if isinstance(mult, bool) or not isinstance(mult, int | float | str):
                raise _Bad("value", "fee_multiplier_override: not a number")
            if isinstance(mult, str) and (len(mult) > _NUM_MAX_LEN or _fixed(mult.strip(), 8) is None):
                raise _Bad("value", "fee_multiplier_override: not a number")
        return FeeUpdate(sid, ticker, _ts_us(msg), fee_type, mult, _clean_payload(msg))


def _opt_id(value: Any) -> int | None:
    return None if value is None else _id(value, "id")


def parse_frame(raw: bytes | str) -> Record | ParseError:
    """Parse one frame with a throwaway parser (convenience for tests and tools)."""
    return Parser().parse(raw)
