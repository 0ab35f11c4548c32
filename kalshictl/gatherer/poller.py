"""The REST snapshot poller: periodic full-book snapshots (``source='rest'``) within a share of the rate limit.

Uses ``GET /markets/orderbooks?tickers=A&tickers=B…`` — ``tickers`` is a *repeated* query parameter (OpenAPI
``style: form, explode: true``), 1–100 values of ≤ 200 characters each; a comma-joined value is one (unknown) ticker
— so a pass over every subscribed market costs ``ceil(n / 100)`` requests, paced to finish in about ``interval_s``
and never faster than ``share_of_rate_limit`` of the client's request budget.

Each book is parsed on its own: one that is malformed (not an object, a ticker that breaks the REST rule, a level
that is not ``[price, count]``, a price or count out of range or not a plain decimal) is refused, counted in
:attr:`SnapshotPoller.rejected` and logged (rate-limited); the rest of its batch is stored (docs/security.md, "Bad
input and what it gets").

Each book is also handed to ``verify`` (the router's held-book check): a quiet market whose REST book disagrees
with the book the gatherer holds gets a stream-ordered ``get_snapshot`` (see docs/gatherer.md, "Tail losses").
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kalshictl.gatherer.book_frames import book_row_fields
from kalshictl.gatherer.router_state import LogLimiter
from kalshictl.kalshi.messages import price_value, size_value
from kalshictl.kalshi.validate import ticker_problem
from kalshictl.schema import SnapshotRow
from kalshictl.units import now_us, parse_cents

if TYPE_CHECKING:
    from kalshictl.config import SnapshotPollerSettings
    from kalshictl.gatherer.writers import TableWriter

log = logging.getLogger("kalshictl.gatherer.poller")
BATCH = 100
MAX_TICKER_CHARS = 200


class BadBook(ValueError):
    """A REST order book that cannot be stored (the reason names the field)."""


def _levels(raw: Any, what: str, *, cents: bool) -> list[tuple[int, int]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise BadBook(f"{what}: not a list of [price, count]")
    levels = []
    for level in raw:
        if not isinstance(level, list) or len(level) != 2:
            raise BadBook(f"{what}: level {repr(level)[:40]} is not [price, count]")
        levels.append((parse_cents(level[0]) if cents else price_value(level[0]), size_value(level[1])))
    return sorted(levels)


def parse_rest_book(body: dict[str, Any]) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """``orderbook_fp`` (dollar strings) or the legacy ``orderbook`` (cents) -> (yes, no) ascending levels.

    Raises :class:`BadBook` or :class:`~kalshictl.units.UnitError` (both ``ValueError``) for a malformed book.
    """
    fp = body.get("orderbook_fp")
    if isinstance(fp, dict):
        return _levels(fp.get("yes_dollars"), "yes_dollars", cents=False), _levels(
            fp.get("no_dollars"), "no_dollars", cents=False
        )
    ob = body.get("orderbook")
    if fp is None and isinstance(ob, dict):
        return _levels(ob.get("yes"), "yes", cents=True), _levels(ob.get("no"), "no", cents=True)
    raise BadBook("orderbook_fp: missing or not an object")


def book_of(item: Any) -> tuple[str, list[tuple[int, int]], list[tuple[int, int]]]:
    """(ticker, yes, no) of one item of ``GET /markets/orderbooks``, or a ``ValueError`` saying why not."""
    if not isinstance(item, dict):
        raise BadBook(f"not an object ({type(item).__name__})")
    ticker = item.get("ticker")
    problem = ticker_problem(ticker)
    if problem is not None:
        raise BadBook(f"{problem}: {repr(ticker)[:40]}")
    yes, no = parse_rest_book(item)
    return str(ticker), yes, no


class SnapshotPoller:
    """Polls order books of the markets returned by ``tickers()`` and writes them to the snapshots writer."""

    def __init__(
        self,
        rest: Any,
        settings: SnapshotPollerSettings,
        writer: TableWriter,
        tickers: Callable[[], list[str]],
        requests_per_second: float,
        verify: Callable[[str, list[tuple[int, int]], list[tuple[int, int]], int], None] | None = None,
    ) -> None:
        self.rest = rest
        self.settings = settings
        self.writer = writer
        self.tickers = tickers
        self.verify = verify
        self.min_gap_s = 1.0 / max(1e-6, requests_per_second * settings.share_of_rate_limit)
        self.passes = 0
        self.snapshots = 0
        self.errors = 0
        self.rejected: Counter[str] = Counter()  # books refused, by exception type
        self._log = LogLimiter()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.settings.enabled and self._task is None:
            self._task = asyncio.create_task(self._run(), name="snapshot-poller")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def poll_once(self, tickers: list[str]) -> int:
        """Fetch and store one batch (≤ 100 markets); returns snapshots written."""
        params: list[tuple[str, Any]] = [("tickers", t) for t in tickers if 0 < len(t) <= MAX_TICKER_CHARS]
        if not params:
            return 0
        if self.settings.depth:
            params.append(("depth", self.settings.depth))
        asked = now_us()
        body = await self.rest.get("/markets/orderbooks", params)
        items = (body.get("orderbooks") or []) if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise BadBook(f"GET /markets/orderbooks: no orderbooks list in {repr(body)[:60]}")
        n = 0
        for item in items:
            try:
                ticker, yes, no = book_of(item)
            except Exception as exc:  # one bad book costs only itself (parsing only: no I/O in this block)
                self.errors += 1
                self.rejected[type(exc).__name__] += 1
                if self._log.ok(type(exc).__name__):
                    log.warning("poller: refused an order book (%d so far): %s", sum(self.rejected.values()), exc)
                continue
            self.writer.add(SnapshotRow(now_us(), None, ticker, "rest", *book_row_fields(yes, no), sid=None, seq=None))
            if self.verify is not None and not self.settings.depth:
                self.verify(ticker, yes, no, asked)
            n += 1
        self.snapshots += n
        return n

    async def _run(self) -> None:
        while True:
            start = time.monotonic()
            tickers = self.tickers()
            batches = [tickers[i : i + BATCH] for i in range(0, len(tickers), BATCH)]
            pace = max(self.min_gap_s, self.settings.interval_s / max(1, len(batches)))
            for batch in batches:
                t0 = time.monotonic()
                try:
                    await self.poll_once(batch)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self.errors += 1
                    log.warning("poller: %s", exc)
                await asyncio.sleep(max(0.0, pace - (time.monotonic() - t0)))
            self.passes += 1
            await asyncio.sleep(max(0.0, self.settings.interval_s - (time.monotonic() - start)) if not batches else 0)
