"""``kalshictl history import``: Kalshi's markets, trades and candlesticks of a date range into production.

The cutoff (``GET /historical/cutoff``) decides which endpoint holds what (docs/research.md, "History"): markets
settled before ``market_settled_ts`` and their candles are under ``/historical/markets``; trades created before
``trades_created_ts`` under ``/historical/trades``; the rest on the live endpoints (``/markets``, ``/markets/trades``,
batch ``/markets/candlesticks``). Markets go through the deduplicator's market sync (kalshictl/dedup/market_sync.py).
Work is cut into units (endpoint, scope, UTC day) with a checkpoint each (kalshictl/dedup/history/store.py), run by a
few workers that share one rate-limited REST client.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from kalshictl.dedup import market_sync
from kalshictl.dedup.history import store
from kalshictl.dedup.history.plan import DAY_S, ImportRange, Market, Progress, parse_time, read_cutoff
from kalshictl.dedup.history.rows import CandleRow, TradeHistoryRow, candle_row, trade_row
from kalshictl.dedup.history.store import Unit
from kalshictl.dedup.market_sync import BadRow
from kalshictl.kalshi.rest import end_of_pages
from kalshictl.units import now_us

if TYPE_CHECKING:
    import psycopg

    from kalshictl.config import DedupSettings
    from kalshictl.kalshi.rest import KalshiRest

log = logging.getLogger("kalshictl.dedup.history")

Job = Callable[["psycopg.AsyncConnection"], Awaitable[int]]
"""One unit of import work on a worker's connection; returns how many units it finished."""

PAGE_LIMIT = 1000
BATCH_TICKERS = 100  # GET /markets/candlesticks: at most 100 tickers ...
BATCH_CANDLES = 10_000  # ... and 10,000 candles per call
FINAL_MARGIN_S = 60


def clock_s() -> float:
    """Now in seconds on the one clock (kalshictl/clock.py): the default of an import's ``clock``."""
    return now_us() / 1_000_000


class HistoryImport:
    """One import run over ``rng``; ``connect`` opens an autocommit production connection (one per worker: every
    write is its own explicit transaction)."""

    def __init__(
        self,
        rest: KalshiRest,
        connect: Callable[[], Awaitable[psycopg.AsyncConnection]],
        rng: ImportRange,
        *,
        workers: int = 4,
        clock: Callable[[], float] = clock_s,
    ) -> None:
        self.rest = rest
        self.connect = connect
        self.rng = rng
        self.workers = max(1, workers)
        self.clock = clock
        self.progress = Progress(requests_start=rest.requests)
        self.markets: dict[str, Market] = {}

    def _now_us(self) -> int:
        return int(self.clock() * 1_000_000)

    def _final(self, unit: Unit) -> bool:
        """Whether a unit's day is over (with a minute of margin): only then is it marked done. A day still under
        way is read again by the next run (idempotently), so trades and candles after this run are not skipped."""
        return unit.range_to + FINAL_MARGIN_S <= self.clock()

    async def run(self) -> dict[str, Any]:
        """Import everything in range; returns the summary (also available as ``progress`` while running)."""
        pconn = await self.connect()
        try:
            checkpoints = await store.load_checkpoints(pconn)  # first: fails early without migration 020
            market_cutoff, trade_cutoff = await read_cutoff(self.rest)
            await self._markets(pconn)
            done = {u for u, c in checkpoints.items() if c.done}
            cursors = {u: c.cursor for u, c in checkpoints.items() if not c.done}
        finally:
            await pconn.close()
        jobs = self._trade_jobs(trade_cutoff, done, cursors) + self._candle_jobs(done)
        queue: asyncio.Queue[Job] = asyncio.Queue()
        for job in jobs:
            queue.put_nowait(job)
        await asyncio.gather(*(self._worker(queue) for _ in range(min(self.workers, max(1, len(jobs))))))
        out = self.progress.summary(self.rest)
        out["cutoff"] = {"market_settled_ts": market_cutoff, "trades_created_ts": trade_cutoff}
        return out

    async def _worker(self, queue: asyncio.Queue[Job]) -> None:
        pconn = await self.connect()
        try:
            while not queue.empty():
                job = queue.get_nowait()
                units = await job(pconn)  # (read the counter only after the await: workers share it)
                self.progress.units_done += units
        finally:
            await pconn.close()

    # ----- markets ----------------------------------------------------------------------------------------------
    def _listings(self) -> list[tuple[str, dict[str, Any], bool]]:
        """(path, params, archived) of every market listing the selection needs."""
        rng = self.rng
        out: list[tuple[str, dict[str, Any], bool]] = []
        if rng.tickers:
            for i in range(0, len(rng.tickers), 100):
                chunk = ",".join(rng.tickers[i : i + 100])
                out += [("/historical/markets", {"tickers": chunk}, True), ("/markets", {"tickers": chunk}, False)]
        elif rng.series:
            for s in rng.series:
                out.append(("/historical/markets", {"series_ticker": s}, True))
                out.append(("/markets", {"series_ticker": s, "min_close_ts": rng.lo}, False))
        else:
            out += [("/historical/markets", {}, True), ("/markets", {"min_close_ts": rng.lo}, False)]
        return out

    async def _markets(self, pconn: psycopg.AsyncConnection) -> None:
        """List the markets open at some time in range and upsert them with the market sync's code."""
        rng = self.rng
        for path, params, archived in self._listings():
            async for page in self.rest.paginate(path, "markets", params, limit=PAGE_LIMIT):
                keep = []
                for item in page:
                    if not isinstance(item, dict):
                        keep.append(item)  # upsert_page rejects and counts it
                        continue
                    opened, closed = parse_time(item.get("open_time")), parse_time(item.get("close_time"))
                    ticker = item.get("ticker")
                    if opened is None or closed is None or not isinstance(ticker, str):
                        keep.append(item)
                        continue
                    if opened >= rng.hi or closed < rng.lo:
                        continue
                    keep.append(item)
                    self.markets[ticker] = Market(ticker, opened, closed, archived)
                written, rejected = await market_sync.upsert_page(pconn, "markets", keep)
                self.progress.markets += written
                self.progress.rejected += rejected

    # ----- trades -----------------------------------------------------------------------------------------------
    def _days(self) -> list[tuple[int, int]]:
        return [(d, d + DAY_S) for d in range(self.rng.lo, self.rng.hi, DAY_S)]

    def _trade_jobs(self, cutoff: int, done: set[Unit], cursors: dict[Unit, str]) -> list[Job]:
        scopes: list[tuple[str, str | None]] = (
            [(f"ticker:{t}", t) for t in self.rng.tickers] if self.rng.tickers else [(self.rng.scope(), None)]
        )
        wanted = None if not self.rng.series or self.rng.tickers else set(self.markets)
        jobs: list[Job] = []
        for lo, hi in self._days():
            parts = [("historical/trades", lo, min(hi, cutoff)), ("markets/trades", max(lo, cutoff), hi)]
            for endpoint, a, b in parts:
                if a >= b:
                    continue
                for scope, ticker in scopes:
                    unit = Unit(endpoint, scope, a, b)
                    self.progress.units_total += 1
                    if unit in done:
                        self.progress.units_skipped += 1
                        continue
                    jobs.append(self._trades_job(unit, ticker, wanted, cursors.get(unit, "")))
        return jobs

    def _trades_job(self, unit: Unit, ticker: str | None, wanted: set[str] | None, cursor: str) -> Job:
        async def job(pconn: psycopg.AsyncConnection) -> int:
            params: dict[str, Any] = {"min_ts": unit.range_from, "max_ts": unit.range_to - 1, "limit": PAGE_LIMIT}
            if ticker:
                params["ticker"] = ticker
            next_cursor: str | None = cursor
            while True:
                if next_cursor:
                    params["cursor"] = next_cursor
                body = await self.rest.get("/" + unit.endpoint, params)
                items = (body or {}).get("trades") or []
                received = self._now_us()
                rows: list[TradeHistoryRow] = []
                bad = 0
                for t in items:
                    try:
                        row = trade_row(t, received)
                    except BadRow as exc:
                        bad += 1
                        store.log_rejected(unit.endpoint, exc)
                        continue
                    if wanted is None or row[3] in wanted:
                        rows.append(row)
                next_cursor = (body or {}).get("cursor")
                end = end_of_pages(next_cursor) or next_cursor == params.get("cursor")
                done = end and self._final(unit)
                written = await store.write_trades(pconn, unit, rows, "" if end else str(next_cursor), done, bad)
                self.progress.trades += written
                self.progress.rejected += bad
                if end:
                    return 1

        return job

    # ----- candles ----------------------------------------------------------------------------------------------
    def _candle_span(self, m: Market, lo: int, hi: int, period: int) -> tuple[int, int, int]:
        """(start_ts, end_ts, most candles) of market ``m`` on day [lo, hi): candles ending in (lo, hi]."""
        length = period * 60
        start = max(lo + 1, m.open_ts + 1)
        end = min(hi, -(-m.close_ts // length) * length)
        return start, end, max(0, (end - start) // length + 2)

    def _candle_jobs(self, done: set[Unit]) -> list[Job]:
        jobs: list[Job] = []
        batches: dict[tuple[int, int, int], list[tuple[Unit, int]]] = {}
        for m in sorted(self.markets.values(), key=lambda m: m.ticker):
            for lo, hi in self._days():
                for period in self.rng.periods:
                    start, end, most = self._candle_span(m, lo, hi, period)
                    if start > end:
                        continue
                    endpoint = "historical/candlesticks" if m.archived else "markets/candlesticks"
                    unit = Unit(endpoint, f"{m.ticker}:{period}", lo, hi)
                    self.progress.units_total += 1
                    if unit in done:
                        self.progress.units_skipped += 1
                        continue
                    if m.archived:
                        jobs.append(self._historical_candles_job(unit, m.ticker, period, start, end))
                    else:
                        batches.setdefault((lo, hi, period), []).append((unit, most))
        for (lo, hi, period), units in batches.items():
            group: list[Unit] = []
            budget = 0
            for unit, most in units:
                if group and (len(group) == BATCH_TICKERS or budget + most > BATCH_CANDLES):
                    jobs.append(self._batch_candles_job(group, lo, hi, period))
                    group, budget = [], 0
                group.append(unit)
                budget += most
            if group:
                jobs.append(self._batch_candles_job(group, lo, hi, period))
        return jobs

    def _rows(self, ticker: str, candles: Any, period: int, live: bool) -> tuple[list[CandleRow], int]:
        received = self._now_us()
        rows: list[CandleRow] = []
        bad = 0
        for c in candles if isinstance(candles, list) else []:
            try:
                rows.append(candle_row(c, ticker, period, live, received))
            except BadRow as exc:
                bad += 1
                store.log_rejected(f"candlesticks {ticker}", exc)
        return rows, bad

    def _historical_candles_job(self, unit: Unit, ticker: str, period: int, start: int, end: int) -> Job:
        async def job(pconn: psycopg.AsyncConnection) -> int:
            body = await self.rest.get(
                f"/historical/markets/{ticker}/candlesticks",
                {"start_ts": start, "end_ts": end, "period_interval": period},
            )
            rows, bad = self._rows(ticker, (body or {}).get("candlesticks"), period, live=False)
            written = await store.write_candles(pconn, [unit], rows, bad, self._final(unit))
            self.progress.candles += written
            self.progress.rejected += bad
            return 1

        return job

    def _batch_candles_job(self, units: list[Unit], lo: int, hi: int, period: int) -> Job:
        async def job(pconn: psycopg.AsyncConnection) -> int:
            tickers = [u.scope.rsplit(":", 1)[0] for u in units]
            spans = [self._candle_span(self.markets[t], lo, hi, period) for t in tickers]
            body = await self.rest.get(
                "/markets/candlesticks",
                {
                    "market_tickers": ",".join(tickers),
                    "start_ts": min(s for s, _, _ in spans),
                    "end_ts": max(e for _, e, _ in spans),
                    "period_interval": period,
                },
            )
            rows: list[CandleRow] = []
            bad = 0
            for entry in (body or {}).get("markets") or []:
                ticker = entry.get("market_ticker") if isinstance(entry, dict) else None
                if ticker not in self.markets:
                    bad += 1
                    store.log_rejected("markets/candlesticks", f"unexpected market {str(ticker)[:40]!r}")
                    continue
                r, b = self._rows(ticker, entry.get("candlesticks"), period, live=True)
                rows += [row for row in r if isinstance(end := row[2], int) and lo * 1_000_000 < end <= hi * 1_000_000]
                bad += b
            written = await store.write_candles(pconn, units, rows, bad, self._final(units[0]))
            self.progress.candles += written
            self.progress.rejected += bad
            return len(units)

        return job


async def import_history(
    settings: DedupSettings,
    rng: ImportRange,
    *,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    every_s: float = 1.0,
    clock: Callable[[], float] = clock_s,
) -> dict[str, Any]:
    """Run an import with a deduplicator's settings (``DedupSettings``): production as its role, the exchange's REST
    URL and key, ``history.requests_per_second`` as this import's budget; ``on_progress`` gets the summary so far."""
    from kalshictl.db.connect import connect_async
    from kalshictl.kalshi.rest import KalshiRest

    ex = settings.exchange
    key = ex.private_key.resolve() if ex.private_key else None
    async with KalshiRest(
        ex.rest_url,
        requests_per_second=settings.history.requests_per_second,
        key_id=ex.api_key_id,
        private_key=key,
        timeout=ex.timeout_s,
    ) as rest:

        async def connect() -> psycopg.AsyncConnection:
            return await connect_async(settings.production, autocommit=True)  # every write is an explicit transaction

        run = HistoryImport(rest, connect, rng, workers=settings.history.workers, clock=clock)
        task = asyncio.create_task(run.run())
        while on_progress is not None and not task.done():
            await asyncio.wait({task}, timeout=every_s)
            on_progress(run.progress.summary(rest))
        return await task
