"""Bounded readers of one field of a decoded frame, for the reference path (:mod:`kalshictl.kalshi.reference`).

Each reader returns the field in kalshictl's units or raises :class:`FieldError` with the ``kind`` the parser
counts: ``shape`` (missing or of the wrong JSON type) or ``value`` (present but invalid or out of range). Numbers are
bounded before any arithmetic, tickers obey the REST rule (docs/security.md, "Bad input and what it gets").
"""

from __future__ import annotations

import re
from typing import Any, Literal, overload

import orjson

from kalshictl.kalshi.validate import is_ticker, ticker_problem
from kalshictl.kalshi.values import BIGINT, ID_MAX, TS_MS_MAX, price_value, size_value
from kalshictl.units import UnitError, parse_cents, rfc3339_us

_INT = re.compile(r"-?[0-9]{1,19}")
_TS_S_MAX = 2**43  # legacy integer ``ts`` in seconds


class FieldError(Exception):
    """A field the record cannot be built from; ``kind`` is ``shape`` or ``value`` (the ParseError kinds)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


# ----------------------------------------------------------------------------------------------------------------
# integers and identifiers


def integer(value: Any, what: str) -> int:
    """A JSON integer, an integral float or a string of at most 19 digits (``what`` names it in the error)."""
    if isinstance(value, bool):
        raise FieldError("value", f"{what}: expected an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _INT.fullmatch(value):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise FieldError("value", f"{what}: expected an integer, got {str(value)[:40]!r}")


def optional_integer(value: Any, what: str) -> int | None:
    return None if value is None else integer(value, what)


def bounded(value: int | None, what: str) -> int | None:
    """``value`` if it fits the sizes' range (|value| < 2**62), else a FieldError."""
    if value is not None and not -BIGINT < value < BIGINT:
        raise FieldError("value", f"{what}: out of range")
    return value


def identifier(value: Any, what: str) -> int:
    """A sid / seq / command id: a non-negative bigint."""
    v = integer(value, what)
    if not 0 <= v < ID_MAX:
        raise FieldError("value", f"{what}: out of range")
    return v


def optional_id(value: Any) -> int | None:
    """A command's ``id``, if it has one."""
    return None if value is None else identifier(value, "id")


# ----------------------------------------------------------------------------------------------------------------
# names, tickers, sides


def name(msg: dict[str, Any], key: str, max_len: int = 128) -> str:
    """A non-empty identifier that PostgreSQL will accept (no NUL, fits its varchar column)."""
    value = msg.get(key)
    if not isinstance(value, str) or not value:
        raise FieldError("shape", f"{key}: missing or not a string")
    if len(value) > max_len or "\x00" in value:
        raise FieldError("value", f"{key}: too long or contains NUL")
    return value


def ticker(msg: dict[str, Any], key: str) -> str:
    """A market/event/series ticker: the REST rule (:func:`kalshictl.kalshi.validate.ticker_problem`)."""
    value = msg.get(key)
    if not isinstance(value, str) or not value:
        raise FieldError("shape", f"{key}: missing or not a string")
    if not is_ticker(value):
        raise FieldError("value", f"{key}: {ticker_problem(value)}")
    return value


def side(value: Any, what: str = "side") -> bool:
    """``yes`` (or True) -> True, ``no`` (or False) -> False."""
    if value == "yes" or value is True:
        return True
    if value == "no" or value is False:
        return False
    raise FieldError("value", f"{what}: expected yes|no, got {str(value)[:40]!r}")


# ----------------------------------------------------------------------------------------------------------------
# times


def _rfc3339_us(ts: str) -> int:
    """An RFC 3339 time in microseconds; a time without a zone is UTC (never the host's local time)."""
    try:
        return rfc3339_us(ts)
    except UnitError:
        raise FieldError("value", f"ts: not RFC3339 or out of range: {ts[:40]!r}") from None


def message_time(msg: dict[str, Any]) -> int | None:
    """Exchange time in µs: ``ts_ms`` (canonical) or the legacy ``ts`` (RFC3339 on deltas, else seconds); None if
    the message has neither."""
    ts_ms = msg.get("ts_ms")
    if ts_ms is not None:
        value = integer(ts_ms, "ts_ms")
        if not 0 <= value < TS_MS_MAX:
            raise FieldError("value", "ts_ms: out of range")
        return value * 1000
    ts = msg.get("ts")
    if isinstance(ts, str) and not _INT.fullmatch(ts):
        return _rfc3339_us(ts)
    if ts is None:
        return None
    return _seconds_us(integer(ts, "ts"), "ts")


def required_time(msg: dict[str, Any]) -> int:
    """:func:`message_time`, which the message must have."""
    ts = message_time(msg)
    if ts is None:
        raise FieldError("shape", "ts_ms: missing")
    return ts


def seconds(msg: dict[str, Any], key: str) -> int | None:
    """An integer time in seconds at ``key`` -> µs; None if absent."""
    value = msg.get(key)
    if value is None:
        return None
    return _seconds_us(integer(value, key), key)


def _seconds_us(value: int, what: str) -> int:
    if not 0 <= value < _TS_S_MAX:
        raise FieldError("value", f"{what}: out of range")
    return value * 1_000_000


# ----------------------------------------------------------------------------------------------------------------
# prices, sizes, book levels


@overload
def price_field(msg: dict[str, Any], dollars: str, cents: str | None, *, required: Literal[True] = ...) -> int: ...
@overload
def price_field(msg: dict[str, Any], dollars: str, cents: str | None, *, required: bool) -> int | None: ...
def price_field(msg: dict[str, Any], dollars: str, cents: str | None, *, required: bool = True) -> int | None:
    """The price at ``dollars`` (a dollar string or number), else at the legacy ``cents`` key; None if neither."""
    try:
        value = msg.get(dollars)
        if value is not None:
            return price_value(value)
        value = msg.get(cents) if cents is not None else None
        if value is not None:
            return parse_cents(value)
    except UnitError as exc:
        raise FieldError("value", str(exc)[:160]) from None
    if required:
        raise FieldError("shape", f"{dollars}: missing")
    return None


@overload
def size_field(
    msg: dict[str, Any], fp: str, legacy: str | None, *, required: Literal[True] = ..., signed: bool = ...
) -> int: ...
@overload
def size_field(
    msg: dict[str, Any], fp: str, legacy: str | None, *, required: bool, signed: bool = ...
) -> int | None: ...
def size_field(
    msg: dict[str, Any], fp: str, legacy: str | None, *, required: bool = True, signed: bool = False
) -> int | None:
    """The size at ``fp`` (a fixed-point string or number), else at the ``legacy`` key; None if neither."""
    try:
        value = msg.get(fp)
        if value is None and legacy is not None:
            value = msg.get(legacy)
        if value is not None:
            return size_value(value, signed=signed)
    except UnitError as exc:
        raise FieldError("value", str(exc)[:160]) from None
    if required:
        raise FieldError("shape", f"{fp}: missing")
    return None


def levels(raw: Any, what: str, *, cents: bool) -> list[tuple[int, int]]:
    """A book side ``[[price, size], ...]`` -> ``[(price, size)]`` ascending by price, the last size of a price
    kept; ``cents``: legacy integer-cent prices."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise FieldError("shape", f"{what}: expected a list of [price, size]")
    out: dict[int, int] = {}
    for level in raw:
        if not isinstance(level, list | tuple) or len(level) != 2:
            raise FieldError("shape", f"{what}: level {str(level)[:40]} is not [price, size]")
        try:
            price = parse_cents(level[0]) if cents else price_value(level[0])
            size = size_value(level[1])
        except UnitError as exc:
            raise FieldError("value", f"{what}: {exc}"[:160]) from None
        out[price] = size
    return sorted(out.items())


# ----------------------------------------------------------------------------------------------------------------
# payloads


def jsonb_payload(msg: dict[str, Any]) -> dict[str, Any]:
    """``msg`` itself, checked to be a payload PostgreSQL's jsonb accepts (no NUL characters anywhere,
    serialisable)."""
    try:
        dumped = orjson.dumps(msg)
    except orjson.JSONEncodeError:
        raise FieldError("value", "payload: nested too deep to store") from None
    if b"\\u0000" in dumped:
        raise FieldError("value", "payload contains NUL")
    return msg
