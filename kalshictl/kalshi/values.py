"""Exact, bounded values of a frame shared by both parser paths: prices, sizes and tickers, remembered in bounded
tables so that a value seen before costs one dictionary lookup.

Every numeric value is bounded before any arithmetic (:mod:`kalshictl.units`) and every ticker obeys the REST rule
(:mod:`kalshictl.kalshi.validate`); docs/security.md, "Bad input and what it gets". The tables are read directly by
the fast path (:mod:`kalshictl.kalshi.fast_path`) and the parser's inlined delta path.
"""

from __future__ import annotations

from typing import Any

from kalshictl.kalshi.validate import is_ticker
from kalshictl.units import (
    MAX_NUMBER_CHARS,
    PRICE_MAX,
    SIZE_LIMIT,
    TS_US_LIMIT,
    UnitError,
    parse_price,
    parse_size,
)

ID_MAX = 2**63  # sid / seq / id: PostgreSQL bigint, never negative
BIGINT = SIZE_LIMIT  # sizes and volumes: |value| below this (bigint with headroom for sums)
TS_US_MAX = TS_US_LIMIT  # exchange times (µs): ts_ms below 2**53
TS_MS_MAX = TS_US_MAX // 1000  # ts_ms: exchange times in milliseconds
NUM_MAX_LEN = MAX_NUMBER_CHARS  # longer numeric strings are refused before any conversion

_DIGITS = frozenset("0123456789")


def fixed(text: str, places: int) -> int | None:
    """Exact ``text`` * 10**places for plain decimal strings, else None (caller falls back)."""
    if len(text) > NUM_MAX_LEN:
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


# ----------------------------------------------------------------------------------------------------------------
# prices

# Every price string seen -> ten-thousandths. Pre-filled with the canonical 4-decimal forms; other spellings of the
# same 10,001 prices ("0.96", "0.960") are added as they appear, up to the bound. ``None`` (an absent optional
# price) maps to None, so the fast path looks optional prices up without a test.
PRICE_CACHE: dict[str | None, int | None] = {f"{p // 10_000}.{p % 10_000:04d}": p for p in range(PRICE_MAX + 1)}
PRICE_CACHE[None] = None
_PRICE_CACHE_MAX = 60_000


def price_value(value: Any) -> int:
    """A dollar price (string or number) -> ten-thousandths, within [0, 1] (raises UnitError)."""
    if isinstance(value, str):
        cached = PRICE_CACHE.get(value)
        if cached is not None:
            return cached
        fast = fixed(value, 4)
        if fast is not None and 0 <= fast <= PRICE_MAX:
            if len(PRICE_CACHE) < _PRICE_CACHE_MAX:
                PRICE_CACHE[value] = fast
            return fast
        if len(value) > NUM_MAX_LEN:
            raise UnitError(f"price: {value[:20]!r}...: too long")
    return parse_price(value)


def price_str(s: str) -> int | None:
    """:func:`price_value` of a price string, or None when it is not a valid price (the fast path declines)."""
    v = PRICE_CACHE.get(s)
    if v is not None:
        return v
    try:
        return price_value(s)
    except UnitError:
        return None


# ----------------------------------------------------------------------------------------------------------------
# sizes


def size_value(value: Any, *, signed: bool = False) -> int:
    """A contract count (string or number) -> hundredths, |size| < 2**62 (raises UnitError)."""
    if isinstance(value, str):
        fast = fixed(value, 2)
        if fast is None and len(value) > NUM_MAX_LEN:
            raise UnitError(f"size: {value[:20]!r}...: too long")
    elif isinstance(value, int) and not isinstance(value, bool):
        fast = value * 100
    else:
        fast = None
    if fast is None:
        fast = parse_size(value, signed=signed)
    if fast < 0 and not signed:
        raise UnitError(f"size: {value!r} is negative")
    if not -BIGINT < fast < BIGINT:
        raise UnitError(f"size: {value!r} out of range")
    return fast


# Size strings seen -> hundredths (bounded): counts (>= 0) and delta changes (signed, never 0) separately. ``None``
# (an absent optional size) maps to None in the counts' table, for the fast path.
SIZE_CACHE: dict[str | None, int | None] = {None: None}
DELTA_CACHE: dict[str, int] = {}
_SIZE_CACHE_MAX = 50_000


def size_str(s: str, signed: bool) -> int | None:
    """Exact hundredths of a size string, or None when it is not a valid size (the fast path declines); a delta
    change (``signed``) of 0 is not valid. Valid values are remembered (bounded) for the next frames."""
    cache: dict[str, int] | dict[str | None, int | None] = DELTA_CACHE if signed else SIZE_CACHE
    v = cache.get(s)
    if v is not None:
        return v
    v = _size_compute(s, signed)
    if v is None or not -BIGINT < v < BIGINT or (signed and v == 0):
        return None
    if len(cache) < _SIZE_CACHE_MAX:
        cache[s] = v
    return v


def _size_compute(s: str, signed: bool) -> int | None:
    """Hundredths of ``s``: plain ``digits.dd`` by integer arithmetic on the string, anything else by
    :func:`size_value`; None if invalid."""
    if s[-3:-2] == "." and s.isascii():
        v = _two_places(s[:-3] + s[-2:], signed)
        if v is not None:
            return v
    try:
        return size_value(s, signed=signed)
    except UnitError:
        return None


def _two_places(body: str, signed: bool) -> int | None:
    """``body`` (a size string without its dot) as an integer if it is plain digits of at most 18 (a leading ``-``
    when ``signed``), else None (the caller takes the general route)."""
    if body.isdecimal():
        return int(body) if len(body) < 19 else None
    if signed and body[:1] == "-" and body[1:].isdecimal():
        return -int(body[1:]) if len(body) < 20 else None
    return None


# ----------------------------------------------------------------------------------------------------------------
# tickers

# Tickers that passed the rule (bounded): the fast path's check is then one set lookup, not the rule again.
GOOD_TICKERS: set[str] = set()
_GOOD_TICKERS_MAX = 65_536


def ticker_ok(ticker: str) -> bool:
    """:func:`~kalshictl.kalshi.validate.is_ticker`, remembered for the next frames (bounded)."""
    if ticker in GOOD_TICKERS:
        return True
    if not is_ticker(ticker):
        return False
    if len(GOOD_TICKERS) < _GOOD_TICKERS_MAX:
        GOOD_TICKERS.add(ticker)
    return True
