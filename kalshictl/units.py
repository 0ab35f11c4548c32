"""Exact fixed-point units used everywhere in kalshictl.

Kalshi sends prices as dollar strings with up to 4 decimals (``"0.4100"``) and contract counts as strings with up to
2 decimals (``"10.00"``). We store:

* prices as integer **ten-thousandths of a dollar** (``"0.4100"`` -> ``4100``; legacy cents ``41`` -> ``4100``);
* sizes/counts as integer **hundredths of a contract** (``"10.00"`` -> ``1000``; legacy integer ``10`` -> ``1000``);
* times as integer **microseconds since the Unix epoch** (``ts_ms`` -> ``ts_ms * 1000``).

Parsing goes through :class:`decimal.Decimal`, never float, and rejects values that would lose precision.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from kalshictl.clock import now_us  # noqa: F401 - re-exported: now in µs on the one clock (kalshictl/clock.py)

PRICE_SCALE = 10_000  # units per dollar
SIZE_SCALE = 100  # units per contract
PRICE_MAX = PRICE_SCALE  # $1.0000

_PRICE_Q = Decimal(1) / PRICE_SCALE
_SIZE_Q = Decimal(1) / SIZE_SCALE


class UnitError(ValueError):
    """A price, size or time that cannot be represented exactly."""


def _to_decimal(value: object, what: str) -> Decimal:
    if isinstance(value, bool) or value is None:
        raise UnitError(f"{what}: expected a number or numeric string, got {value!r}")
    if isinstance(value, float):
        value = repr(value)
    try:
        dec = Decimal(str(value).strip())
    except (InvalidOperation, ValueError) as exc:
        raise UnitError(f"{what}: not a number: {value!r}") from exc
    if not dec.is_finite():
        raise UnitError(f"{what}: not finite: {value!r}")
    return dec


def _scale_exact(dec: Decimal, scale: int, what: str, raw: object) -> int:
    scaled = dec * scale
    if scaled != scaled.to_integral_value():
        raise UnitError(f"{what}: {raw!r} has more precision than 1/{scale}")
    return int(scaled)


def parse_price(value: object) -> int:
    """Parse a dollar price (``"0.4100"``, ``"0.96"``) into ten-thousandths of a dollar, within [0, 1]."""
    price = _scale_exact(_to_decimal(value, "price"), PRICE_SCALE, "price", value)
    if not 0 <= price <= PRICE_MAX:
        raise UnitError(f"price: {value!r} outside [0, 1] dollars")
    return price


def parse_cents(value: object) -> int:
    """Parse a legacy integer-cent price (``42``) into ten-thousandths of a dollar."""
    cents = _to_decimal(value, "cents")
    if cents != cents.to_integral_value():
        raise UnitError(f"cents: {value!r} is not a whole number of cents")
    price = int(cents) * (PRICE_SCALE // 100)
    if not 0 <= price <= PRICE_MAX:
        raise UnitError(f"cents: {value!r} outside [0, 100]")
    return price


def parse_size(value: object, *, signed: bool = False) -> int:
    """Parse a contract count (``"10.00"``, legacy ``10``) into hundredths of a contract."""
    size = _scale_exact(_to_decimal(value, "size"), SIZE_SCALE, "size", value)
    if size < 0 and not signed:
        raise UnitError(f"size: {value!r} is negative")
    return size


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
