"""Fast, exact formatting of prices, sizes and times in Kalshi's wire shapes."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache

from kalshictl import clock
from kalshictl.units import PRICE_MAX, format_price

# Every representable price (ten-thousandths of a dollar) as Kalshi's 4-decimal dollar string.
PRICE_STR: list[str] = [format_price(p) for p in range(PRICE_MAX + 1)]


def price_str(price: int) -> str:
    """``4100`` -> ``"0.4100"`` (table lookup, exact)."""
    return PRICE_STR[price]


def size_str(size: int) -> str:
    """Hundredths of a contract as a 2-decimal count string; signed (``-5450`` -> ``"-54.50"``)."""
    if size < 0:
        size = -size
        return f"-{size // 100}.{size % 100:02d}"
    return f"{size // 100}.{size % 100:02d}"


@lru_cache(maxsize=65536)
def iso(ts_s: int) -> str:
    """Unix seconds as RFC3339 UTC (``2026-11-27T15:00:00Z``)."""
    return datetime.fromtimestamp(ts_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Clock:
    """The exchange's milliseconds: the one clock (kalshictl/clock.py: wall time, or faster via ``KALSHICTL_CLOCK``)
    plus the jumps asked for through ``POST /_sim/jump``; never goes backwards (so same-millisecond bookkeeping
    stays simple)."""

    __slots__ = ("_last", "offset_ms")

    def __init__(self) -> None:
        self._last = 0
        self.offset_ms = 0

    def now_ms(self) -> int:
        """Current Unix time in ms, clamped to be non-decreasing."""
        now = clock.now_us() // 1000 + self.offset_ms
        if now < self._last:
            return self._last
        self._last = now
        return now

    def jump(self, seconds: float) -> int:
        """Move the exchange's time forward by ``seconds`` (>= 0); returns the new now in ms."""
        if seconds < 0:
            raise ValueError("the exchange's clock never goes back")
        self.offset_ms += int(seconds * 1000)
        return self.now_ms()
