"""The in-memory market registry: every market the gatherer records, loaded by paging ``GET /markets``.

Compact on purpose (Kalshi lists ~425,000 markets): one dict entry ``ticker -> status`` with interned status strings.
Lifecycle messages keep it current (created markets join, settled markets leave), and a periodic
``GET /markets?min_updated_ts=…`` refresh catches what the lifecycle channel missed. Multivariate (``KXMVE…``)
markets are listed too (``mve_filter=only``), so their books are recorded like any other market's.

A market's book is *recordable* (subscribed) unless it is settled/finalized: every other status can still become
active — ``initialized`` at its open time (no WebSocket event), ``inactive`` (paused) by ``activated``, ``closed``
when its close time moves into the future (docs/gatherer.md "Placement", from Kalshi's market lifecycle page) — and
its first delta can come in the same millisecond as the news of it.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from kalshictl.backoff import Backoff, Jitter, retry_until
from kalshictl.errors import summarize
from kalshictl.kalshi.validate import valid_markets

log = logging.getLogger("kalshictl.gatherer.registry")

# Kalshi market statuses that can still produce order-book activity.
LIVE_STATUSES = frozenset(("initialized", "unopened", "active", "open", "inactive", "paused", "closed", "determined"))
TERMINAL_STATUSES = frozenset(("finalized", "settled"))
PAUSED_STATUSES = frozenset(("inactive", "paused"))


def is_mve(market: dict[str, Any]) -> bool:
    """A multivariate (combo) market: ``KXMVE…`` ticker or an ``mve_collection_ticker``."""
    if not isinstance(market, dict):  # a malformed item (skipped and counted by add_many)
        return False
    return bool(market.get("mve_collection_ticker")) or str(market.get("ticker") or "").startswith("KXMVE")


def recordable(status: str | None) -> bool:
    """Whether a market in this status is subscribed (its book can change)."""
    return status is not None and status not in TERMINAL_STATUSES


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
        self.refreshed_at: float | None = None
        self.mve_in_default = False  # the default /markets listing includes multivariate markets
        self.refreshes = 0

    def __len__(self) -> int:
        return len(self._markets)

    def __contains__(self, ticker: object) -> bool:
        return ticker in self._markets

    def tickers(self) -> list[str]:
        """All tickers (a copy)."""
        return list(self._markets)

    def recordable(self) -> list[str]:
        """Tickers whose books are recorded."""
        return [t for t, s in self._markets.items() if recordable(s)]

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

    def remove(self, ticker: str) -> None:
        """Drop a market (if present)."""
        self._markets.pop(ticker, None)

    async def load(
        self,
        rest: Any,
        statuses: list[str],
        *,
        progress: Callable[[int, int], None] | None = None,
        limit: int = 1000,
        mve: bool = True,
    ) -> int:
        """Page through ``GET /markets`` (rate limited and 429-aware via the REST client); returns markets loaded."""
        start = time.monotonic()
        # one pass per status: Kalshi documents ``status`` as a single value; multivariate markets listed on their own
        passes: list[dict[str, Any]] = [{"status": s} for s in statuses] or [{}]
        saw_mve = False
        for params in passes:
            async for page in rest.paginate("/markets", "markets", params, limit=limit):
                self.add_many(page)
                saw_mve = saw_mve or any(is_mve(m) for m in page)
                self.pages += 1
                if progress is not None:
                    progress(self.pages, len(self._markets))
        self.mve_in_default = saw_mve
        if mve and not saw_mve:  # the default listing left multivariate markets out: list them on their own
            for params in passes:
                async for page in rest.paginate("/markets", "markets", {**params, "mve_filter": "only"}, limit=limit):
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
        fatal: tuple[type[BaseException], ...] = (),
    ) -> bool:
        """Run ``attempt`` (a :meth:`load`) until it succeeds or ``stop`` is set, with jittered exponential backoff.

        A failure (``ReadTimeout``, a 5xx, a malformed body ...) does not end the gatherer: :attr:`load_error` holds
        the reason, which :meth:`annotate` puts in /health (503) until a load succeeds. Returns False if stopped.
        Exceptions of a ``fatal`` type (a rejected API key) are raised at once: no retry can fix them.
        """

        async def counted() -> None:
            self.load_attempts += 1
            await attempt()

        def failed(exc: Exception, delay: float) -> None:  # anything: retrying beats exiting into StartLimitBurst
            self.load_error = summarize(exc)[:300]
            log.warning("market registry load failed (attempt %d): %s; retry in %.1fs", self.load_attempts,
                        self.load_error, delay)  # fmt: skip

        backoff = Backoff(min_backoff_s, max_backoff_s, Jitter.HALF)
        if not await retry_until(counted, stop, backoff, fatal=fatal, on_failure=failed):
            return False
        self.load_error = None
        return True

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

    async def refresh(self, rest: Any, since_s: int, *, limit: int = 1000) -> tuple[list[str], list[str]]:
        """``GET /markets?min_updated_ts=since_s``: apply every changed market; returns (now recordable, no longer
        recordable) tickers. Markets that reached a terminal status leave the registry."""
        join: list[str] = []
        leave: list[str] = []
        for extra in ({}, {"mve_filter": "only"}):
            if extra and self.mve_in_default:
                break
            params = {"min_updated_ts": since_s, **extra}
            async for page in rest.paginate("/markets", "markets", params, limit=limit):
                for m in valid_markets(page, self.rejected):
                    ticker = m["ticker"]
                    status = str(m.get("status") or "active")
                    was = recordable(self._markets.get(ticker))
                    if status in TERMINAL_STATUSES:
                        self._markets.pop(ticker, None)
                    else:
                        self.add(ticker, status)
                    now = recordable(status)
                    if now and not was:
                        join.append(ticker)
                    elif was and not now:
                        leave.append(ticker)
        self.refreshed_at = time.time()
        self.refreshes += 1
        return join, leave
