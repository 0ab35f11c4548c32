"""The in-memory market registry: every market the gatherer records, loaded by paging ``GET /markets``.

Compact on purpose (the seed's 425,000 markets): one dict entry ``ticker -> status`` with interned status strings.
Lifecycle messages keep it current (created markets join, settled markets leave), and a periodic
``GET /markets?min_updated_ts=…`` refresh catches what the lifecycle channel missed. Multivariate (``KXMVE…``)
markets are listed too (``mve_filter=only``), so their books are recorded like any other market's.

A market's book is *recordable* (subscribed) unless it is settled/finalized or deactivated (paused): a paused
market's book cannot change, and its ``activated`` brings it back with a fresh snapshot.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

# Kalshi market statuses that can still produce order-book activity.
LIVE_STATUSES = frozenset(("initialized", "unopened", "active", "open", "inactive", "paused", "closed", "determined"))
TERMINAL_STATUSES = frozenset(("finalized", "settled"))
PAUSED_STATUSES = frozenset(("inactive", "paused"))


def is_mve(market: dict[str, Any]) -> bool:
    """A multivariate (combo) market: ``KXMVE…`` ticker or an ``mve_collection_ticker``."""
    return bool(market.get("mve_collection_ticker")) or str(market.get("ticker") or "").startswith("KXMVE")


def recordable(status: str | None) -> bool:
    """Whether a market in this status is subscribed (its book can change)."""
    return status is not None and status not in TERMINAL_STATUSES and status not in PAUSED_STATUSES


class MarketRegistry:
    """Tickers of the markets being recorded, with their last known status."""

    def __init__(self) -> None:
        self._markets: dict[str, str] = {}
        self.loaded_at: float | None = None
        self.load_seconds: float | None = None
        self.pages = 0
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
                for m in page:
                    ticker = m.get("ticker")
                    if not isinstance(ticker, str) or not ticker:
                        continue
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
