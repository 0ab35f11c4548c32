"""Parse instants and UTC days for research commands (all results in µs since the Unix epoch)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import overload

from kalshictl.errors import ConfigError
from kalshictl.units import now_us

_NUMBER = re.compile(r"^\d+(\.\d+)?$")
US_PER_DAY = 86_400_000_000


def parse_instant(text: str, *, what: str = "time") -> int:
    """ISO-8601 (naive = UTC) or epoch seconds / milliseconds / microseconds (by magnitude) -> µs.

    ``now`` is accepted. Epoch numbers: < 1e11 seconds (fractions allowed), < 1e14 milliseconds, else microseconds.
    """
    raw = text.strip()
    if raw.lower() == "now":
        return now_us()
    if _NUMBER.match(raw):
        try:
            value = Decimal(raw)
        except InvalidOperation:  # pragma: no cover - guarded by the regex
            raise ConfigError(f"{what}: not a number: {text!r}") from None
        if value < Decimal(10) ** 11:
            return int(value * 1_000_000)
        if value < Decimal(10) ** 14:
            return int(value * 1_000)
        return int(value)
    try:
        dt = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{what}: expected ISO-8601 or epoch s/ms/µs, got {text!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    delta = dt - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def parse_window(from_text: str, to_text: str) -> tuple[int, int]:
    """``--from``/``--to`` -> (from µs, to µs); a window that ends before it starts is a ConfigError (exit 2)."""
    from_us, to_us = parse_instant(from_text, what="--from"), parse_instant(to_text, what="--to")
    if from_us > to_us:
        raise ConfigError(f"--from {from_text} is after --to {to_text}")
    return from_us, to_us


@overload
def iso(us: int) -> str: ...
@overload
def iso(us: None) -> None: ...
@overload
def iso(us: int | None) -> str | None: ...


def iso(us: int | None) -> str | None:
    """µs -> ``2026-11-27T12:00:00.123456Z`` (None stays None)."""
    if us is None:
        return None
    dt = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_day(text: str, *, what: str = "date") -> date:
    """A UTC calendar day ``YYYY-MM-DD``."""
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(f"{what}: expected YYYY-MM-DD, got {text!r}") from None


def day_bounds(day: date) -> tuple[int, int]:
    """[start, end) of a UTC day in µs."""
    start = (day - date(1970, 1, 1)).days * US_PER_DAY
    return start, start + US_PER_DAY


def days(first: date, last: date) -> list[date]:
    """Every day from ``first`` to ``last`` inclusive."""
    if last < first:
        raise ConfigError(f"--to {last} is before --from {first}")
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]
