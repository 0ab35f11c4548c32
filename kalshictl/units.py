"""Exact fixed-point units used everywhere in kalshictl.

Kalshi sends prices as dollar strings with up to 4 decimals (``"0.4100"``) and contract counts as strings with up to
2 decimals (``"10.00"``). We store:

* prices as integer **ten-thousandths of a dollar** (``"0.4100"`` -> ``4100``; legacy cents ``41`` -> ``4100``);
* sizes/counts as integer **hundredths of a contract** (``"10.00"`` -> ``1000``; legacy integer ``10`` -> ``1000``);
* times as integer **microseconds since the Unix epoch** (``ts_ms`` -> ``ts_ms * 1000``).

Parsing is exact integer arithmetic on the digits, never float, and rejects values that would lose precision. It is
bounded *before* any arithmetic (every parser of exchange input must be, docs/security.md "Bad input"): a numeric
string is at most :data:`MAX_NUMBER_CHARS` characters of plain ASCII decimal (digits, an optional ``-`` and
fraction) -- no exponent, sign ``+``, whitespace, underscore or non-ASCII digit, none of which Kalshi sends (its OpenAPI
``FixedPointDollars``/``FixedPointCount``: plain decimals, up to 6 places in responses; legacy cents were integers) --
so ``"9e999999"`` or ``"1e-999999999"`` is refused in microseconds instead of being expanded (or read as 0).
Integers must lie within a signed 64-bit range and floats within 1e18 before they are scaled.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from kalshictl.clock import now_us as now_us  # re-exported: now in µs on the one clock (kalshictl/clock.py)

PRICE_SCALE = 10_000  # units per dollar
SIZE_SCALE = 100  # units per contract
PRICE_MAX = PRICE_SCALE  # $1.0000
SIZE_LIMIT = 2**62  # |size| below this: a PostgreSQL bigint with headroom for sums
MAX_NUMBER_CHARS = 40  # longer numeric strings are refused before they are looked at
MAX_TIME_CHARS = 64  # longer time strings likewise
TS_US_LIMIT = 2**53 * 1000  # exchange times (µs) below this: a millisecond epoch below 2**53
_INT_LIMIT = 2**63  # integers (JSON numbers) beyond a signed 64-bit range are refused before they are scaled
_FLOAT_LIMIT = 1e18

_PRICE_Q = Decimal(1) / PRICE_SCALE
_SIZE_Q = Decimal(1) / SIZE_SCALE
_PLAIN = re.compile(r"(-?)([0-9]+)(?:\.([0-9]+))?")  # ASCII digits only; no exponent, no "+", no whitespace


class UnitError(ValueError):
    """A price, size or time that cannot be represented exactly."""


def _excerpt(value: object) -> str:
    """A short excerpt for an error message, itself bounded (no repr of a long string or of a huge integer)."""
    if isinstance(value, str):
        return repr(value[:40])
    if isinstance(value, int) and not -_INT_LIMIT < value < _INT_LIMIT:
        return f"<an integer of {value.bit_length()} bits>"
    return repr(value)[:40]


def _scaled(value: object, places: int, what: str) -> int:
    """``value`` * 10**places exactly, or :class:`UnitError`; every bound is checked before any arithmetic."""
    if isinstance(value, bool) or value is None:
        raise UnitError(f"{what}: expected a number or numeric string, got {_excerpt(value)}")
    if isinstance(value, str):
        if len(value) > MAX_NUMBER_CHARS:
            raise UnitError(f"{what}: {_excerpt(value)}...: longer than {MAX_NUMBER_CHARS} characters")
        m = _PLAIN.fullmatch(value)
        if m is None:
            raise UnitError(f"{what}: not a plain decimal number: {_excerpt(value)}")
        sign, whole, frac = m.groups()
        if frac:
            if len(frac) > places and frac[places:].strip("0"):
                raise UnitError(f"{what}: {_excerpt(value)} has more precision than 1/{10**places}")
            scaled = int(whole) * 10**places + (int(frac[:places].ljust(places, "0")) if places else 0)
        else:
            scaled = int(whole) * 10**places
        return -scaled if sign else scaled
    if isinstance(value, int):
        if not -_INT_LIMIT < value < _INT_LIMIT:
            raise UnitError(f"{what}: {_excerpt(value)} out of range")
        return value * 10**places
    if isinstance(value, float):
        if not math.isfinite(value) or abs(value) >= _FLOAT_LIMIT:
            raise UnitError(f"{what}: {_excerpt(value)} not finite or out of range")
        try:
            dec = Decimal(repr(value)).scaleb(places)  # |value| < 1e18: a small exponent, exact
            exact = dec == dec.to_integral_value()
        except ArithmeticError:  # decimal.Overflow / InvalidOperation: cannot happen within the bound; refuse
            raise UnitError(f"{what}: {_excerpt(value)} cannot be scaled exactly") from None
        if not exact:
            raise UnitError(f"{what}: {_excerpt(value)} has more precision than 1/{10**places}")
        return int(dec)
    raise UnitError(f"{what}: expected a number or numeric string, got {type(value).__name__}")


def parse_price(value: object) -> int:
    """Parse a dollar price (``"0.4100"``, ``"0.96"``) into ten-thousandths of a dollar, within [0, 1]."""
    price = _scaled(value, 4, "price")
    if not 0 <= price <= PRICE_MAX:
        raise UnitError(f"price: {_excerpt(value)} outside [0, 1] dollars")
    return price


def parse_cents(value: object) -> int:
    """Parse a legacy integer-cent price (``42``) into ten-thousandths of a dollar."""
    cents = _scaled(value, 0, "cents")
    if not 0 <= cents <= 100:
        raise UnitError(f"cents: {_excerpt(value)} outside [0, 100]")
    return cents * (PRICE_SCALE // 100)


def parse_size(value: object, *, signed: bool = False) -> int:
    """Parse a contract count (``"10.00"``, legacy ``10``) into hundredths of a contract, ``|size| < 2**62``."""
    size = _scaled(value, 2, "size")
    if size < 0 and not signed:
        raise UnitError(f"size: {_excerpt(value)} is negative")
    if not -SIZE_LIMIT < size < SIZE_LIMIT:
        raise UnitError(f"size: {_excerpt(value)} out of range")
    return size


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def rfc3339_us(value: object) -> int:
    """An RFC 3339 time (``"2026-11-27T15:00:01.234Z"``) in µs since the epoch, within [1970, 2**53 ms).

    A time without a zone is UTC, never the host's local time.
    """
    if not isinstance(value, str) or len(value) > MAX_TIME_CHARS:
        raise UnitError(f"time: not an RFC 3339 string: {_excerpt(value)}")
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        us = (dt - _EPOCH) // _US
    except (ValueError, OverflowError):
        raise UnitError(f"time: not RFC 3339: {_excerpt(value)}") from None
    if not 0 <= us < TS_US_LIMIT:
        raise UnitError(f"time: {_excerpt(value)} out of range")
    return us


def format_price(price: int) -> str:
    """Format ten-thousandths of a dollar as Kalshi's 4-decimal dollar string (``4100`` -> ``"0.4100"``)."""
    return str((Decimal(price) * _PRICE_Q).quantize(_PRICE_Q))


def format_size(size: int) -> str:
    """Format hundredths of a contract as Kalshi's 2-decimal count string (``1000`` -> ``"10.00"``)."""
    return str((Decimal(size) * _SIZE_Q).quantize(_SIZE_Q))


def ms_to_us(ts_ms: int) -> int:
    """Convert a millisecond epoch timestamp to microseconds."""
    return int(ts_ms) * 1000


def complement(price: int) -> int:
    """The other leg's price: a YES bid at p is a NO ask at 1 - p."""
    return PRICE_MAX - price
