"""Parse Kalshi WebSocket frames into typed records, in kalshictl's exact integer units.

Accepts the current fixed-point shapes (``price_dollars`` / ``delta_fp`` / ``yes_dollars_fp`` ...) and the legacy
integer-cent shapes recorded before 2026-03-12 (``price`` / ``delta`` / ``yes`` ...); numeric values may arrive as
JSON numbers or strings. :func:`parse_frame` never raises: bad input (malformed JSON, unknown type, missing or
out-of-range values) comes back as a :class:`ParseError` with a ``kind`` that callers count. Unknown *fields* are
tolerated (Kalshi adds fields) and reported in :attr:`Parser.unknown_fields` so they show up in metrics.

Units: prices in ten-thousandths of a dollar, sizes in hundredths of a contract, times in microseconds
(see :mod:`kalshictl.units`). ``side``/``taker_side`` are booleans, ``True`` = YES.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from kalshictl.units import PRICE_MAX, UnitError, parse_cents, parse_price, parse_size

# ----------------------------------------------------------------------------------------------------------------
# records


@dataclass(slots=True)
class OrderbookSnapshot:
    """A full book of one market: ``yes``/``no`` bid levels ``[(price, size)]`` ascending, each side's own leg."""

    sid: int
    seq: int | None
    ticker: str
    yes: list[tuple[int, int]]
    no: list[tuple[int, int]]


@dataclass(slots=True)
class OrderbookDelta:
    """A signed change of the size at (side, price)."""

    sid: int
    seq: int | None
    ticker: str
    side: bool
    price: int
    size_delta: int
    exchange_ts: int


@dataclass(slots=True)
class Trade:
    """One trade; ``price`` is the YES price, ``taker_side`` the taker's outcome side (True = YES)."""

    sid: int | None
    trade_id: str
    ticker: str
    exchange_ts: int
    price: int
    size: int
    taker_side: bool
    is_block_trade: bool


@dataclass(slots=True)
class TickerUpdate:
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


@dataclass(slots=True)
class Lifecycle:
    """A market_lifecycle_v2 (or event_lifecycle) message; ``exchange_ts`` 0 when the message carries no time."""

    sid: int | None
    ticker: str
    event_type: str
    exchange_ts: int
    payload: dict[str, Any]


@dataclass(slots=True)
class Subscribed:
    """Ack of ``subscribe`` (one per channel)."""

    id: int | None
    channel: str
    sid: int


@dataclass(slots=True)
class Ack:
    """``ok`` (update_subscription / list_subscriptions) or ``unsubscribed``; ``seq`` = the sid's last data seq."""

    type: str
    id: int | None
    sid: int | None
    seq: int | None
    msg: Any


@dataclass(slots=True)
class ErrorMsg:
    """A command error (code per kalshi-api.md §4)."""

    id: int | None
    code: int
    message: str
    market_ticker: str | None


@dataclass(slots=True)
class ParseError:
    """A frame that could not be turned into a record. ``kind``: json | shape | type | value."""

    kind: str
    detail: str
    sid: int | None = None
    seq: int | None = None
    msg_type: str | None = None


Record = OrderbookSnapshot | OrderbookDelta | Trade | TickerUpdate | Lifecycle | Subscribed | Ack | ErrorMsg

# Codes that end a subscription (resubscribe): 10 channel error, 17 internal, 25 buffer overflow.
TERMINAL_ERROR_CODES = frozenset((10, 17, 25))


class _Bad(Exception):
    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


# ----------------------------------------------------------------------------------------------------------------
# fast exact value parsing (falls back to kalshictl.units for anything unusual)

_PRICE_CACHE: dict[Any, int] = {}
_DIGITS = frozenset("0123456789")


def _fixed(text: str, places: int) -> int | None:
    """Exact ``text`` * 10**places for plain decimal strings, else None (caller falls back)."""
    neg = text.startswith("-")
    body = text[1:] if neg else text
    whole, dot, frac = body.partition(".")
    if not whole or len(frac) > places or not _DIGITS.issuperset(whole) or not _DIGITS.issuperset(frac):
        return None
    if dot and not frac:
        return None
    value = int(whole) * 10**places + (int(frac.ljust(places, "0")) if frac else 0)
    return -value if neg else value


def price_value(value: Any) -> int:
    """A dollar price (string or number) -> ten-thousandths, within [0, 1] (raises UnitError)."""
    cached = _PRICE_CACHE.get(value) if isinstance(value, str) else None
    if cached is not None:
        return cached
    if isinstance(value, str):
        fast = _fixed(value, 4)
        if fast is not None and 0 <= fast <= PRICE_MAX:
            if len(_PRICE_CACHE) < 100_000:
                _PRICE_CACHE[value] = fast
            return fast
    return parse_price(value)


def size_value(value: Any, *, signed: bool = False) -> int:
    """A contract count (string or number) -> hundredths (raises UnitError)."""
    if isinstance(value, str):
        fast = _fixed(value, 2)
        if fast is not None and (signed or fast >= 0):
            return fast
    elif isinstance(value, int) and not isinstance(value, bool) and (signed or value >= 0):
        return value * 100
    return parse_size(value, signed=signed)


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise _Bad("value", f"{what}: expected an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise _Bad("value", f"{what}: expected an integer, got {value!r}")


def _opt_int(value: Any, what: str) -> int | None:
    return None if value is None else _int(value, what)


_BIGINT = 2**62
_UUID = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")


def _str(msg: dict, key: str, max_len: int = 128) -> str:
    """A non-empty identifier that PostgreSQL will accept (no NUL, fits its varchar column)."""
    value = msg.get(key)
    if not isinstance(value, str) or not value:
        raise _Bad("shape", f"{key}: missing or not a string")
    if len(value) > max_len or "\x00" in value:
        raise _Bad("value", f"{key}: too long or contains NUL")
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
    raise _Bad("value", f"{what}: expected yes|no, got {value!r}")


def _ts_us(msg: dict, *, delta: bool = False) -> int:
    """Exchange time in microseconds: ``ts_ms`` (canonical) or the legacy ``ts`` (RFC3339 on deltas, else seconds)."""
    ts_ms = msg.get("ts_ms")
    if ts_ms is not None:
        value = _int(ts_ms, "ts_ms")
        if not 0 <= value < 2**53:
            raise _Bad("value", "ts_ms: out of range")
        return value * 1000
    ts = msg.get("ts")
    if isinstance(ts, str) and not ts.lstrip("-").isdigit():
        try:
            return int(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1_000_000)
        except ValueError:
            raise _Bad("value", f"ts: not RFC3339: {ts!r}") from None
    if ts is not None:
        value = _int(ts, "ts")
        if not 0 <= value < 2**43:
            raise _Bad("value", "ts: out of range")
        return value * 1_000_000
    raise _Bad("shape", "ts_ms: missing")


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
        raise _Bad("value", str(exc)) from None
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
        raise _Bad("value", str(exc)) from None
    if required:
        raise _Bad("shape", f"{fp}: missing")
    return None


def _clean_payload(msg: dict) -> dict:
    """A payload PostgreSQL's jsonb accepts (no NUL characters anywhere)."""
    if b"\\u0000" in orjson.dumps(msg):
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
            raise _Bad("shape", f"{what}: level {level!r} is not [price, size]")
        try:
            price = parse_cents(level[0]) if cents else price_value(level[0])
            size = size_value(level[1])
        except UnitError as exc:
            raise _Bad("value", f"{what}: {exc}") from None
        out[price] = size
    return sorted(out.items())


# ----------------------------------------------------------------------------------------------------------------
# per-type parsers

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
LIFECYCLE_TS_FALLBACK = ("settled_ts", "determination_ts", "close_ts", "open_ts")


class Parser:
    """Stateless frame parser with counters; ``use_yes_price`` undoes the subscription flag for NO-side prices."""

    def __init__(self, *, use_yes_price: bool = False) -> None:
        self.use_yes_price = use_yes_price
        self.unknown_fields: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()

    def _unknown(self, mtype: str, msg: dict, known: frozenset[str]) -> None:
        if not known.issuperset(msg):
            for key in msg:
                if key not in known:
                    self.unknown_fields[f"{mtype}.{key}"] += 1

    def parse(self, raw: bytes | str) -> Record | ParseError:
        """Parse one text frame; never raises."""
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
                sid = _int(sid, "sid")
            if seq is not None:
                seq = _int(seq, "seq")
            return self._dispatch(mtype, frame, sid, seq)
        except _Bad as exc:
            self.errors[exc.kind] += 1
            return ParseError(
                exc.kind,
                exc.detail,
                sid if isinstance(sid, int) else None,
                seq if isinstance(seq, int) else None,
                mtype if isinstance(mtype, str) else None,
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
        if mtype == "market_lifecycle_v2":
            return self._lifecycle(self._msg(frame), sid)
        if mtype == "event_lifecycle":
            return self._event_lifecycle(self._msg(frame), sid)
        if mtype == "subscribed":
            msg = self._msg(frame)
            return Subscribed(_opt_int(frame.get("id"), "id"), str(msg.get("channel", "")), _int(msg.get("sid"), "sid"))
        if mtype in ("ok", "unsubscribed"):
            return Ack(mtype, _opt_int(frame.get("id"), "id"), sid, seq, frame.get("msg"))
        if mtype == "error":
            msg = frame.get("msg") or {}
            if not isinstance(msg, dict):
                raise _Bad("shape", "error msg: not an object")
            code = _opt_int(msg.get("code"), "code") or 0
            mt = msg.get("market_ticker")
            return ErrorMsg(
                _opt_int(frame.get("id"), "id"), code, str(msg.get("msg", "")), mt if isinstance(mt, str) else None
            )
        raise _Bad("type", f"unknown message type {mtype!r}")

    def _delta(self, msg: dict, sid: int | None, seq: int | None) -> OrderbookDelta:
        if sid is None:
            raise _Bad("shape", "orderbook_delta without sid")
        self._unknown("orderbook_delta", msg, _DELTA_FIELDS)
        ticker = _str(msg, "market_ticker")
        side = _side(msg.get("side"))
        price = _price_field(msg, "price_dollars", "price")
        if self.use_yes_price and not side:
            price = PRICE_MAX - price  # type: ignore[operator]
        size_delta = _size_field(msg, "delta_fp", "delta", signed=True)
        if size_delta == 0:
            raise _Bad("value", "delta: zero size change")
        _bounded(size_delta, "delta_fp")
        return OrderbookDelta(sid, seq, ticker, side, price, size_delta, _ts_us(msg, delta=True))  # type: ignore[arg-type]

    def _snapshot(self, msg: dict, sid: int | None, seq: int | None) -> OrderbookSnapshot:
        if sid is None:
            raise _Bad("shape", "orderbook_snapshot without sid")
        self._unknown("orderbook_snapshot", msg, _SNAPSHOT_FIELDS)
        ticker = _str(msg, "market_ticker")
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
        ticker = _str(msg, "market_ticker")
        price = _price_field(msg, "yes_price_dollars", "yes_price", required=False)
        if price is None:
            no_price = _price_field(msg, "no_price_dollars", "no_price", required=False)
            if no_price is None:
                raise _Bad("shape", "yes_price_dollars: missing")
            price = PRICE_MAX - no_price
        size = _bounded(_size_field(msg, "count_fp", "count"), "count_fp")
        taker = msg.get("taker_outcome_side", msg.get("taker_side"))
        if taker is None and "taker_book_side" in msg:
            taker = "yes" if msg["taker_book_side"] == "bid" else "no"
        block = msg.get("is_block_trade", False)
        return Trade(sid, trade_id, ticker, _ts_us(msg), price, size, _side(taker, "taker_side"), block is True)  # type: ignore[arg-type]

    def _ticker(self, msg: dict, sid: int | None) -> TickerUpdate:
        self._unknown("ticker", msg, _TICKER_FIELDS)
        return TickerUpdate(
            sid,
            _str(msg, "market_ticker"),
            _ts_us(msg),
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

    def _lifecycle(self, msg: dict, sid: int | None) -> Lifecycle:
        self._unknown("market_lifecycle_v2", msg, _LIFECYCLE_FIELDS)
        ticker = _str(msg, "market_ticker")
        event_type = _str(msg, "event_type", 64)
        if "ts_ms" in msg or "ts" in msg:
            ts = _ts_us(msg)
        else:  # the real API may omit a message time: fall back to the event's own timestamps (seconds)
            ts = 0
            for key in LIFECYCLE_TS_FALLBACK:
                if msg.get(key) is not None:
                    ts = _int(msg[key], key) * 1_000_000
                    break
        return Lifecycle(sid, ticker, event_type, _bounded(ts, "ts"), _clean_payload(msg))  # type: ignore[arg-type]

    def _event_lifecycle(self, msg: dict, sid: int | None) -> Lifecycle:
        self._unknown("event_lifecycle", msg, _EVENT_FIELDS)
        ticker = _str(msg, "event_ticker")
        ts = _ts_us(msg) if ("ts_ms" in msg or "ts" in msg) else 0
        return Lifecycle(sid, ticker, "event_lifecycle", _bounded(ts, "ts"), _clean_payload(msg))  # type: ignore[arg-type]


def parse_frame(raw: bytes | str) -> Record | ParseError:
    """Parse one frame with a throwaway parser (convenience for tests and tools)."""
    return Parser().parse(raw)
