"""What a history import covers and how far it got: the range and selection, progress counters, the cutoff."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kalshictl.units import UnitError, rfc3339_us

if TYPE_CHECKING:
    from kalshictl.kalshi.rest import KalshiRest

DAY_S = 86_400
PERIODS = (1, 60, 1440)  # candle lengths Kalshi serves, in minutes


@dataclass(frozen=True)
class ImportRange:
    """What to import: UTC days [day_from, day_to] (Unix seconds of their 00:00), a selection, candle periods."""

    day_from: int
    day_to: int
    series: tuple[str, ...] = ()
    tickers: tuple[str, ...] = ()
    periods: tuple[int, ...] = (60, 1440)

    @property
    def lo(self) -> int:
        return self.day_from

    @property
    def hi(self) -> int:
        return self.day_to + DAY_S

    def scope(self) -> str:
        """The selection's name in checkpoints (a digest when long)."""
        if self.tickers:
            text = "tickers:" + ",".join(sorted(self.tickers))
        elif self.series:
            text = "series:" + ",".join(sorted(self.series))
        else:
            return "all"
        return text if len(text) <= 200 else text[:160] + "#" + hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass
class Progress:
    """Counters of one import; ``render`` is called about once a second by the CLI."""

    markets: int = 0
    trades: int = 0
    candles: int = 0
    rejected: int = 0
    units_total: int = 0
    units_done: int = 0
    units_skipped: int = 0  # complete in an earlier run
    started: float = field(default_factory=time.monotonic)
    requests_start: int = 0

    def summary(self, rest: KalshiRest) -> dict[str, Any]:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        requests = rest.requests - self.requests_start
        remaining = self.units_total - self.units_done - self.units_skipped
        rate = self.units_done / elapsed
        return {
            "markets": self.markets,
            "trades": self.trades,
            "candles": self.candles,
            "rejected": self.rejected,
            "units_total": self.units_total,
            "units_done": self.units_done,
            "units_skipped": self.units_skipped,
            "requests": requests,
            "throttled": rest.throttled,
            "elapsed_s": round(elapsed, 3),
            "requests_per_s": round(requests / elapsed, 2),
            "rows_per_s": round((self.markets + self.trades + self.candles) / elapsed, 1),
            "eta_s": None if rate == 0 else round(remaining / rate, 1),
        }


@dataclass(frozen=True)
class Market:
    ticker: str
    open_ts: int
    close_ts: int
    archived: bool  # settled before the cutoff: /historical/… only


def parse_time(value: Any) -> int | None:
    """RFC 3339 → Unix seconds (:func:`kalshictl.units.rfc3339_us`: bounded, no zone = UTC), or None."""
    try:
        return rfc3339_us(value) // 1_000_000
    except UnitError:
        return None


async def read_cutoff(rest: KalshiRest) -> tuple[int, int]:
    """(market_settled_ts, trades_created_ts) in Unix seconds."""
    body = await rest.get("/historical/cutoff")
    markets, trades = (
        parse_time((body or {}).get("market_settled_ts")),
        parse_time((body or {}).get("trades_created_ts")),
    )
    if markets is None or trades is None:
        from kalshictl.kalshi.rest import KalshiApiError

        raise KalshiApiError(f"GET /historical/cutoff: unexpected answer {str(body)[:200]}")
    return markets, trades
