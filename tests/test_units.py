from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kalshictl import units


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
