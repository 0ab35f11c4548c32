"""The in-memory market registry: every market the gatherer records, loaded by paging ``GET /markets``.

Compact on purpose (the seed's 425,000 markets): one dict entry ``ticker -> status`` with interned status strings.
Lifecycle messages keep it current (created markets join, settled markets leave).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

# Kalshi market statuses that can still produce order-book activity.
LIVE_STATUSES = frozenset(("initialized", "unopened", "active", "open", "inactive", "paused", "closed", "determined"))
TERMINAL_STATUSES = frozenset(("finalized", "settled"))


class MarketRegistry:
    """Tickers of the markets being recorded, with their last known status."""

    def __init__(self) -> None:
        self._markets: dict[str, str] = {}
        self.loaded_at: float | None = None
        self.load_seconds: float | None = None
        self.pages = 0

    def __len__(self) -> int:
        return len(self._markets)

    def __contains__(self, ticker: object) -> bool:
        return ticker in self._markets

    def tickers(self) -> list[str]:
        """All tickers (a copy)."""
        return list(self._markets)

    def status(self, ticker: str) -> str | None:
        return self._markets.get(ticker)

    def add(self, ticker: str, status: str = "initialized") -> bool:
        """Add or update a market; returns True if it is new."""
        new = ticker not in self._markets
        self._markets[sys.intern(ticker)] = sys.intern(status)
        return new

    def add_many(self, markets: Iterable[dict[str, Any]]) -> int:
        """Add REST market objects; returns how many were new."""
        before = len(self._markets)
        intern = sys.intern
        store = self._markets
        for m in markets:
            ticker = m.get("ticker")
            if isinstance(ticker, str) and ticker:
                store[intern(ticker)] = intern(str(m.get("status") or "active"))
        return len(self._markets) - before

    def remove(self, ticker: str) -> bool:
        """Drop a market; returns True if it was present."""
        return self._markets.pop(ticker, None) is not None

    async def load(
        self,
        rest: Any,
        statuses: list[str],
        *,
        progress: Callable[[int, int], None] | None = None,
        limit: int = 1000,
    ) -> int:
        """Page through ``GET /markets`` (rate limited and 429-aware via the REST client); returns markets loaded."""
        start = time.monotonic()
        # one pass per status: Kalshi documents ``status`` as a single value
        for params in [{"status": s} for s in statuses] or [{}]:
            async for page in rest.paginate("/markets", "markets", params, limit=limit):
                self.add_many(page)
                self.pages += 1
                if progress is not None:
                    progress(self.pages, len(self._markets))
        self.loaded_at = time.time()
        self.load_seconds = time.monotonic() - start
        return len(self._markets)
