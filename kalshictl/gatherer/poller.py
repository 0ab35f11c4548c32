"""The REST snapshot poller: periodic full-book snapshots (``source='rest'``) within a share of the rate limit.

Uses ``GET /markets/orderbooks?tickers=A&tickers=B…`` — ``tickers`` is a *repeated* query parameter (OpenAPI
``style: form, explode: true``), 1–100 values of ≤ 200 characters each; a comma-joined value is one (unknown) ticker
— so a pass over every subscribed market costs ``ceil(n / 100)`` requests, paced to finish in about ``interval_s``
and never faster than ``share_of_rate_limit`` of the client's request budget.

Each book is also handed to ``verify`` (the router's held-book check): a quiet market whose REST book disagrees
with the book the gatherer holds gets a stream-ordered ``get_snapshot`` (see docs/gatherer.md, "Tail losses").
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kalshictl.gatherer.book_frames import book_row_fields
from kalshictl.gatherer.writers import now_us
from kalshictl.kalshi.messages import price_value, size_value
from kalshictl.schema import SnapshotRow
from kalshictl.units import UnitError, parse_cents

if TYPE_CHECKING:
    from kalshictl.config import SnapshotPollerSettings
    from kalshictl.gatherer.writers import BatchWriter

log = logging.getLogger("kalshictl.gatherer.poller")
BATCH = 100
MAX_TICKER_CHARS = 200


def parse_rest_book(body: dict[str, Any]) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """``orderbook_fp`` (dollar strings) or the legacy ``orderbook`` (cents) -> (yes, no) ascending levels."""
    fp = body.get("orderbook_fp")
    if isinstance(fp, dict):
        yes = [(price_value(p), size_value(s)) for p, s in fp.get("yes_dollars") or []]
        no = [(price_value(p), size_value(s)) for p, s in fp.get("no_dollars") or []]
    else:
        ob = body.get("orderbook") or {}
        yes = [(parse_cents(p), size_value(s)) for p, s in ob.get("yes") or []]
        no = [(parse_cents(p), size_value(s)) for p, s in ob.get("no") or []]
    return sorted(yes), sorted(no)


class SnapshotPoller:
    """Polls order books of the markets returned by ``tickers()`` and writes them to the snapshots writer."""

    def __init__(
        self,
        rest: Any,
        settings: SnapshotPollerSettings,
        writer: BatchWriter,
        tickers: Callable[[], list[str]],
        requests_per_second: float,
        verify: Callable[[str, list, list, int], None] | None = None,
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
        self._task: asyncio.Task | None = None

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
        n = 0
        for item in (body or {}).get("orderbooks") or []:
            ticker = item.get("ticker")
            if not isinstance(ticker, str):
                continue
            try:
                yes, no = parse_rest_book(item)
            except (UnitError, TypeError, ValueError) as exc:
                self.errors += 1
                log.warning("poller: bad orderbook for %s: %s", ticker, exc)
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
