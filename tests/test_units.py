import time
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kalshictl import units
from tests.helpers import cpu_cost


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("0.4100", 4100), ("0.96", 9600), ("0.960", 9600), ("0.0001", 1), ("1.0000", 10000), ("0", 0), (0.41, 4100)],
)
def test_parse_price(raw, expected):
    assert units.parse_price(raw) == expected


@pytest.mark.parametrize("raw", ["0.41005", "1.0001", "-0.01", "abc", "", None, True, "NaN", "inf"])
def test_parse_price_rejects(raw):
    with pytest.raises(units.UnitError):
        units.parse_price(raw)


def test_sizes_and_cents():
    assert units.parse_size("10.00") == 1000
    assert units.parse_size("12.5") == 1250
    assert units.parse_size(13) == 1300
    assert units.parse_size("-54.00", signed=True) == -5400
    with pytest.raises(units.UnitError):
        units.parse_size("-1.00")
    with pytest.raises(units.UnitError):
        units.parse_size("0.001")
    assert units.parse_cents(42) == 4200
    with pytest.raises(units.UnitError):
        units.parse_cents(101)


@given(st.integers(min_value=0, max_value=10_000))
def test_price_roundtrip(p):
    assert units.parse_price(units.format_price(p)) == p
    assert Decimal(units.format_price(p)) * 10_000 == p


@given(st.integers(min_value=-(10**12), max_value=10**12))
def test_size_roundtrip(s):
    assert units.parse_size(units.format_size(s), signed=True) == s


# ----- hostile numbers: bounded before any arithmetic ------------------------------------------------------------
# Kalshi sends prices as ``^[0-9]+(\.[0-9]{1,6})?$`` dollar strings, counts with 2 decimals and (legacy) integer
# cents; never an exponent. Each of these was accepted, or took from 0.5 s to over a minute, on 8087b5b.
HOSTILE_NUMBERS = [
    "9e99999",
    "9e999999",
    "-9e999999",
    "1e10000000",
    "1e-999999999",
    "0e-999999999",
    "1E+2",
    "4100e-4",
    "0.4100e0",
    "1" * 5000,
    "0." + "0" * 5000,
    "0." + "0" * 5000 + "1",
    "1" + "0" * 40,
    "+1",
    ".5",
    "5.",
    "1_0",
    "\u0661\u0662",
    " 1",
    "1\n",
    "NaN",
    "-inf",
    "Infinity",
    "sNaN",
    "0x10",
    2**64,
    -(2**64),
    10**400,
    10**5000,  # past the int -> str conversion limit: even the error message must not print it
    1e300,
    float("inf"),
    float("nan"),
    [],
    {},
]


def _id(v: object) -> str:
    return f"int of {v.bit_length()} bits" if isinstance(v, int) and v.bit_length() > 64 else repr(v)[:24]


@pytest.mark.parametrize("raw", HOSTILE_NUMBERS, ids=_id)
@pytest.mark.parametrize("fn", [units.parse_price, units.parse_cents, units.parse_size], ids=lambda f: f.__name__)
def test_hostile_numbers_are_refused_within_10ms(fn, raw):
    out, took = cpu_cost(fn, raw)
    assert isinstance(out, units.UnitError) and took < 0.010, (out, took)


def test_what_kalshi_can_send_is_read_exactly():
    # responses emit up to 6 decimals (OpenAPI FixedPointDollars); digits past our 1/10,000 must be zeros
    assert units.parse_price("0.560000") == 5600
    assert units.parse_price("0.5600") == units.parse_price("0.56") == units.parse_price(0.56) == 5600
    assert units.parse_price("1") == 10_000 and units.parse_price(1) == 10_000
    with pytest.raises(units.UnitError):
        units.parse_price("0.560001")
    assert units.parse_size("10") == units.parse_size("10.0") == units.parse_size("10.00") == 1000
    assert units.parse_size("-0.00") == 0
    assert units.parse_size("46116860184273879.03") == units.SIZE_LIMIT - 1
    with pytest.raises(units.UnitError):
        units.parse_size("46116860184273879.04")
    with pytest.raises(units.UnitError):
        units.parse_size(-500)
    assert (
        units.parse_cents("42")
        == units.parse_cents("42.00")
        == units.parse_cents(42)
        == units.parse_cents(42.0)
        == 4200
    )
    with pytest.raises(units.UnitError):
        units.parse_cents(99999900)


def test_rfc3339_without_a_zone_is_utc_whatever_the_host_zone(monkeypatch):
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert units.rfc3339_us("2026-11-27T15:00:01.234567") == 1_795_791_601_234_567
        assert units.rfc3339_us("2026-11-27T15:00:01.234567Z") == 1_795_791_601_234_567
        assert units.rfc3339_us("2026-11-27T10:00:01.234567-05:00") == 1_795_791_601_234_567
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    for bad in ("garbage", "", "2026-13-01T00:00:00Z", "9" * 5000, "0001-01-01T00:00:00+14:00", None, 5):
        with pytest.raises(units.UnitError):
            units.rfc3339_us(bad)  # type: ignore[arg-type]
