"""The in-memory market registry: every market the gatherer records, loaded by paging ``GET /markets``.

Compact on purpose (the seed's 425,000 markets): one dict entry ``ticker -> status`` with interned status strings.
Lifecycle messages keep it current (created markets join, settled markets leave).
"""

from __future__ import annotations

import asyncio
import logging
import random
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from kalshictl.kalshi.validate import valid_markets

log = logging.getLogger("kalshictl.gatherer.registry")

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
        self.rejected: Counter[str] = Counter()  # GET /markets items skipped, by reason (kalshi.validate)
        self.load_error: str | None = None  # why the last startup load failed (a retry is pending)
        self.load_attempts = 0

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
        for m in valid_markets(markets, self.rejected):
            ticker = m.get("ticker")
            if isinstance(ticker, str) and ticker:
                status = m.get("status")
                store[intern(ticker)] = intern(status if isinstance(status, str) and status else "active")
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

    async def load_with_retry(
        self,
        attempt: Callable[[], Awaitable[Any]],
        stop: asyncio.Event,
        *,
        min_backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
    ) -> bool:
        """Run ``attempt`` (a :meth:`load`) until it succeeds or ``stop`` is set, with jittered exponential backoff.

        A failure (``ReadTimeout``, a 5xx, a malformed body ...) does not end the gatherer: :attr:`load_error` holds
        the reason, which :meth:`annotate` puts in /health (503) until a load succeeds. Returns False if stopped.
        """
        backoff = min_backoff_s
        while not stop.is_set():
            self.load_attempts += 1
            try:
                await attempt()
            except Exception as exc:  # anything: retrying beats exiting into systemd's StartLimitBurst
                text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                self.load_error = f"{type(exc).__name__}: {text}"[:300].rstrip(": ")
                delay = backoff * random.uniform(0.5, 1.0)
                log.warning("market registry load failed (attempt %d): %s; retry in %.1fs", self.load_attempts,
                            self.load_error, delay)  # fmt: skip
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                except TimeoutError:
                    pass
                backoff = min(max_backoff_s, backoff * 2)
                continue
            self.load_error = None
            return True
        return False

    def annotate(self, report: Any) -> Any:
        """Add the registry's load failure (if any) to a /health report and keep it unhealthy meanwhile."""
        if self.load_error is not None:
            report.status = "unhealthy"
            report.details.setdefault("market_registry", {}).update(
                {"status": "unhealthy", "error": self.load_error, "attempts": self.load_attempts}
            )
            report.details["reason"] = f"market registry not loaded: {self.load_error}"
        if self.rejected:
            report.details.setdefault("market_registry", {})["rejected"] = dict(self.rejected)
        return report
