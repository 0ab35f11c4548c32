"""Trade backfill: trades missed during a gap window are fetched again from REST (docs/gatherer.md "Recovery").

Every window that loses trade-channel data (a disconnect of the trade subscription, an exchange-side outage, a
trades-buffer overflow, the gatherer's own downtime — ``restart``, ``kill -9`` included — and windows a previous
instance left open) is, once closed, marked ``recovery = 'pending'`` and queued here. The worker pages
``GET /markets/trades`` over ``[from_ts - margin, to_ts + margin]`` (``min_ts``/``max_ts`` in **seconds**, ``limit``
1000, ``cursor``, newest first; with ``ticker`` when the window names few markets) within its own share of the REST
budget, and hands every trade this gatherer has not stored yet to the same trades writer as the WebSocket path, with
``source = 'rest'``. When the rows are committed the window becomes ``recovered``; when the exchange keeps refusing,
``failed``. One gatherer succeeding is enough: the deduplicator stores each ``trade_id`` once.

Ticker updates and lifecycle messages are not served again; a window on those channels (or on every channel) is
re-anchored instead: one REST market listing of the affected markets (``GET /markets?tickers=…`` when the window
names at most 100 markets, else ``min_updated_ts`` = the window's start) is stored as ticker *snapshot* rows
(``source = 'rest'``, time = when the listing was received). The window stays a recorded loss for those channels.

A lifecycle window also hides markets that were created or re-activated meanwhile: their order books are not
subscribed until the re-anchor listing names them (the service then subscribes them and records their books from the
window's start as an ``outage``; a listed market it does not hold that is closed or paused again may have been
active during the window: its book is recorded lost over the window). While the window is open and until its listing
is done, :meth:`TradeBackfill.unanchored_since` holds the coverage heartbeat at the window's start (a ``kill -9``
meanwhile leaves a restart window over it), and a graceful shutdown lists them before it stops receiving
(:meth:`TradeBackfill.anchor_pending`).

Every REST item is checked on its own before it becomes a row (the ticker rule of :mod:`kalshictl.kalshi.validate`,
a UUID trade id, prices in [0, 1] dollar, counts in [0, 2**62) hundredths, a ``yes``/``no`` taker side, an RFC 3339
``created_time`` -- UTC when it has no zone): an item that fails is refused, counted (``rejected_rows`` in
:meth:`TradeBackfill.status`) and logged (rate-limited), and the rest of its window is stored (docs/security.md,
"Bad input and what it gets").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from kalshictl.backoff import Backoff
from kalshictl.gatherer.router_state import LogLimiter
from kalshictl.kalshi.validate import TRADE_ID, ticker_problem, valid_markets
from kalshictl.schema import TickerRow
from kalshictl.units import PRICE_MAX, now_us, parse_cents, parse_price, parse_size, rfc3339_us

if TYPE_CHECKING:
    import psycopg

    from kalshictl.gatherer.gaps import GapLog, Window

log = logging.getLogger("kalshictl.gatherer.backfill")

TRADE_CHANNELS = frozenset(("trade", "*"))
ANCHOR_CHANNELS = frozenset(("ticker", "market_lifecycle_v2", "multivariate_market_lifecycle", "*"))
LIFECYCLE_CHANNELS = frozenset(("market_lifecycle_v2", "multivariate_market_lifecycle"))
MAX_LISTED_TICKERS = 100
PAGE_LIMIT = 1000
MAX_TICKER_FILTERS = 20  # a window over more markets is fetched without a ticker filter and filtered here
RETRY = Backoff(0.5, 10.0)  # between a window's attempts: 0.5 s, 1 s, 2 s … (wall time)


class BadRestRow(ValueError):
    """A REST item that cannot be stored (the reason names the field, with a short excerpt at most)."""


def created_us(value: object) -> int:
    """RFC3339 ``created_time`` → µs (UTC when it has no zone), truncated to the millisecond (the WebSocket's
    ``ts_ms`` resolution); :class:`~kalshictl.units.UnitError` (a ``ValueError``) when it is not one."""
    us = rfc3339_us(value)
    return us - us % 1000


def _trade_price(t: dict[str, Any]) -> int:
    if t.get("yes_price_dollars") is not None:
        return parse_price(t["yes_price_dollars"])
    if t.get("no_price_dollars") is not None:
        return PRICE_MAX - parse_price(t["no_price_dollars"])
    if t.get("yes_price") is not None:  # legacy integer cents
        return parse_cents(t["yes_price"])
    if t.get("no_price") is not None:
        return PRICE_MAX - parse_cents(t["no_price"])
    raise BadRestRow("yes_price_dollars: missing")


def trade_row(t: Any, received_at: int) -> tuple[Any, ...]:
    """A REST ``Trade`` as a trades-writer row (``source = 'rest'``, no sid); :class:`BadRestRow` or
    :class:`~kalshictl.units.UnitError` (both ``ValueError``) naming the field when it cannot be stored."""
    if not isinstance(t, dict):
        raise BadRestRow(f"not an object ({type(t).__name__})")
    trade_id = t.get("trade_id")
    if not isinstance(trade_id, str) or not TRADE_ID.match(trade_id):
        raise BadRestRow(f"trade_id: not a UUID: {repr(trade_id)[:40]}")
    ticker = t.get("ticker")
    problem = ticker_problem(ticker)
    if problem is not None:
        raise BadRestRow(f"{problem}: {repr(ticker)[:40]}")
    size = parse_size(t["count_fp"] if t.get("count_fp") is not None else t.get("count"))
    taker = t.get("taker_outcome_side") or t.get("taker_side")
    if taker is None and "taker_book_side" in t:
        book_side = t["taker_book_side"]
        taker = "yes" if book_side == "bid" else "no" if book_side == "ask" else None
    if taker not in ("yes", "no"):
        raise BadRestRow(f"taker_outcome_side: expected yes|no, got {repr(taker)[:40]}")
    block = t.get("is_block_trade", False)
    if block is not None and not isinstance(block, bool):
        raise BadRestRow(f"is_block_trade: expected true/false, got {repr(block)[:40]}")
    return (
        trade_id,
        created_us(t.get("created_time")),
        received_at,
        ticker,
        _trade_price(t),
        size,
        taker == "yes",
        block is True,
        "rest",
        None,
    )


def _opt(fn: Callable[[Any], int], value: Any) -> int | None:
    return None if value is None or value == "" else fn(value)


def ticker_snapshot_row(m: dict[str, Any], received_at: int) -> TickerRow:
    """A REST ``Market`` as a tickers row (``source = 'rest'``) stamped with the time its listing was received."""
    return TickerRow(
        exchange_ts=received_at,
        received_at=received_at,
        ticker=m["ticker"],
        yes_bid=_opt(parse_price, m.get("yes_bid_dollars")),
        yes_ask=_opt(parse_price, m.get("yes_ask_dollars")),
        last_price=_opt(parse_price, m.get("last_price_dollars")),
        volume=_opt(parse_size, m.get("volume_fp")),
        open_interest=_opt(parse_size, m.get("open_interest_fp")),
        dollar_volume=None,
        dollar_open_interest=None,
        yes_bid_size=_opt(parse_size, m.get("yes_bid_size_fp")),
        yes_ask_size=_opt(parse_size, m.get("yes_ask_size_fp")),
        last_trade_size=None,
        source="rest",
        occurrence=0,
        sid=None,
    )


class TradeBackfill:
    """Queue of windows whose trades are to be fetched again; one worker, paced to its share of the REST budget."""

    def __init__(
        self,
        rest: Any,
        gaplog: GapLog,
        trades_writer: Any,
        connect: Callable[[], Awaitable[psycopg.AsyncConnection]],
        tickers_writer: Any = None,
        *,
        requests_per_second: float,
        share: float = 0.25,
        margin_s: float = 2.0,
        settle_s: float = 1.0,
        attempts: int = 3,
        on_markets: Callable[[list[dict[str, Any]], Window], None] | None = None,
        list_mve_separately: Callable[[], bool] = lambda: False,
    ) -> None:
        self.rest = rest
        self.gaplog = gaplog
        self.writer = trades_writer
        self.tickers_writer = tickers_writer
        # called with the markets of a re-anchor listing (the service subscribes those it did not know)
        self.on_markets = on_markets
        self.anchored_markets = 0
        # whether multivariate markets need their own listing (``mve_filter=only``): set from the registry, which saw
        # whether the exchange's default listing included them
        self.list_mve_separately = list_mve_separately
        self._connect = connect
        self.min_gap_s = 1.0 / max(1e-6, requests_per_second * share)
        self.margin_us = int(margin_s * 1_000_000)
        self.settle_s = settle_s
        self.attempts = attempts
        self._queue: asyncio.Queue[Window] = asyncio.Queue()
        self._unanchored: dict[tuple[str, int], Window] = {}  # lifecycle windows whose listing is not done yet
        self._task: asyncio.Task[None] | None = None
        self._last_request = 0.0
        self.requests = 0
        self.recovered_windows = 0
        self.failed_windows = 0
        self.trades_fetched = 0
        self.trades_stored = 0
        self.rejected: Counter[str] = Counter()  # REST items refused, by reason
        self._log = LogLimiter()
        self.busy = False

    # ----- scheduling -----------------------------------------------------------------------------------------
    def on_closed(self, w: Window) -> None:
        """GapLog callback: queue a closed window that lost trades (marks it ``pending``)."""
        wanted = w.channel in TRADE_CHANNELS or (self.tickers_writer is not None and w.channel in ANCHOR_CHANNELS)
        if not wanted or w.to_ts is None or w.recovery in ("recovered", "failed"):
            return
        if w.recovery != "pending":
            self.gaplog.set_recovery(w.key, "pending")
            w.recovery = "pending"
        if self.tickers_writer is not None and w.channel in LIFECYCLE_CHANNELS:
            self._unanchored[w.key] = w
        self._queue.put_nowait(w)

    def unanchored_since(self, now: int) -> int:
        """The start of the oldest lifecycle window still open or whose re-anchor listing is not done (``now`` when
        none): markets activated since then may be unknown to this gatherer, so the coverage heartbeat does not pass
        it (a ``kill -9`` meanwhile leaves a restart window from there)."""
        blind = self.gaplog.open_since(LIFECYCLE_CHANNELS)
        return min([now, *(w.from_ts for w in self._unanchored.values()), *([blind] if blind is not None else [])])

    async def anchor_pending(self, timeout: float) -> int:
        """At shutdown: stop the worker and list now the markets of every lifecycle window not yet re-anchored
        (their unknown markets get their ``outage`` windows before the process ends); returns how many windows were
        done. Trade backfills still queued stay ``pending`` for the next start."""
        await self.stop()
        done = 0
        deadline = time.monotonic() + timeout
        for w in list(self._unanchored.values()):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                await asyncio.wait_for(self.reanchor(w), left)
            except Exception as exc:  # the heartbeat stays below the window: the next start's restart window covers it
                log.warning("re-anchor of window %s/%d at shutdown failed: %s", w.instance_id, w.window_id, exc)
                continue
            self._settle(w, "recovered")  # a lifecycle window: its listing is its whole recovery
            done += 1
        return done

    def _settle(self, w: Window, outcome: str) -> None:
        """A window's recovery is over (``recovered`` or ``failed``): counted, recorded, and no longer unanchored."""
        self._unanchored.pop(w.key, None)
        if outcome == "recovered":
            self.recovered_windows += 1
        else:
            self.failed_windows += 1
        self.gaplog.set_recovery(w.key, outcome)
        w.recovery = outcome

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="trade-backfill")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    @property
    def pending(self) -> int:
        return self._queue.qsize() + (1 if self.busy else 0)

    def status(self) -> dict[str, Any]:
        return {
            "pending_windows": self.pending,
            "recovered_windows": self.recovered_windows,
            "failed_windows": self.failed_windows,
            "requests": self.requests,
            "trades_fetched": self.trades_fetched,
            "trades_stored": self.trades_stored,
            "anchored_markets": self.anchored_markets,
            "rejected_rows": sum(self.rejected.values()),
        }

    def _reject(self, what: str, exc: Exception) -> None:
        """Count and log (rate-limited) one REST item that cannot be stored; the rest of its window goes on."""
        key = f"{what}: {type(exc).__name__}"
        self.rejected[key] += 1
        if self._log.ok(key):
            log.warning("backfill: refused a REST %s (%d refused so far): %s", what, self.rejected[key], exc)

    # ----- the worker -----------------------------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            w = await self._queue.get()
            self.busy = True
            try:
                # let the WebSocket rows of the margin after the window arrive and reach the database first (they
                # are not re-added)
                ready_at = (w.to_ts or 0) + self.margin_us + int(self.settle_s * 1_000_000)
                await asyncio.sleep(max(self.settle_s, (ready_at - now_us()) / 1e6))
                outcome = "failed"
                delays = RETRY.delays()
                for attempt in range(self.attempts):
                    try:
                        if w.channel in TRADE_CHANNELS:
                            await self.backfill(w)
                        if self.tickers_writer is not None and w.channel in ANCHOR_CHANNELS:
                            await self.reanchor(w)
                        outcome = "recovered"
                        break
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:
                        log.warning(
                            "trade backfill of window %s/%d failed (attempt %d): %s",
                            w.instance_id,
                            w.window_id,
                            attempt + 1,
                            exc,
                        )
                        await asyncio.sleep(next(delays))
                self._settle(w, outcome)
            finally:
                self.busy = False

    async def _get(self, params: dict[str, Any], path: str) -> dict[str, Any]:
        wait = self._last_request + self.min_gap_s - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        self._last_request = time.monotonic()
        self.requests += 1
        return await self.rest.get(path, params) or {}

    async def _all_pages(self, path: str, key: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Every item under ``key`` of every page (Kalshi's ``cursor`` paging; a cursor seen before ends it)."""
        out: list[dict[str, Any]] = []
        seen: set[str] = set()
        while True:
            body = await self._get(params, path)
            out.extend(body.get(key) or [])
            cursor = body.get("cursor")
            if not cursor or cursor in seen:
                return out
            seen.add(cursor)
            params["cursor"] = cursor

    async def reanchor(self, w: Window) -> int:
        """One REST market listing of the window's markets, stored as ticker snapshot rows; returns how many."""
        params: dict[str, Any] = {"limit": PAGE_LIMIT}
        if w.tickers is not None and len(w.tickers) <= MAX_LISTED_TICKERS:
            params["tickers"] = ",".join(w.tickers)
        else:
            params["min_updated_ts"] = math.floor(w.from_ts / 1_000_000)
        wanted = None if w.tickers is None else set(w.tickers)
        markets: list[dict[str, Any]] = []
        passes = [params]
        if "min_updated_ts" in params and self.list_mve_separately():  # the default listing leaves KXMVE… out
            passes.append({**params, "mve_filter": "only"})
        for p in passes:
            markets.extend(await self._all_pages("/markets", "markets", p))
        markets = list(valid_markets(markets, self.rejected))  # objects with a good ticker; the others counted
        received = now_us()  # when the listing arrived: every row of it carries this time
        n = 0
        for m in markets:
            if wanted is not None and m.get("ticker") not in wanted:
                continue
            try:
                row = ticker_snapshot_row(m, received)
            except Exception as exc:  # one bad market costs only itself (parsing only: no I/O here)
                self._reject("market", exc)
                continue
            if not self.tickers_writer.add(row):
                raise RuntimeError("tickers buffer full")
            n += 1
        if n and not await self.tickers_writer.flush(30):
            raise RuntimeError("ticker snapshots not committed within 30 s")
        if self.on_markets is not None:
            self.on_markets([m for m in markets if wanted is None or m.get("ticker") in wanted], w)
        self.anchored_markets += n
        log.info("re-anchored %d markets after window %s/%d (%s)", n, w.instance_id, w.window_id, w.channel)
        return n

    async def fetch(self, lo_us: int, hi_us: int, ticker: str | None = None) -> list[dict[str, Any]]:
        """Every trade with created_time in [lo_us, hi_us] (second-granular request, exact filter here)."""
        params: dict[str, Any] = {
            "min_ts": math.floor(lo_us / 1_000_000),
            "max_ts": math.ceil(hi_us / 1_000_000),
            "limit": PAGE_LIMIT,
        }
        if ticker is not None:
            params["ticker"] = ticker
        return await self._all_pages("/markets/trades", "trades", params)

    async def backfill(self, w: Window) -> int:
        """Fetch and store the trades of window ``w``; returns how many rows were handed to the writer."""
        assert w.to_ts is not None
        lo, hi = w.from_ts - self.margin_us, w.to_ts + self.margin_us
        if w.tickers is not None and len(w.tickers) <= MAX_TICKER_FILTERS:
            trades = []
            for ticker in w.tickers:
                trades.extend(await self.fetch(lo, hi, ticker))
        else:
            trades = await self.fetch(lo, hi)
        wanted = None if w.tickers is None else set(w.tickers)
        now = now_us()
        rows = []
        for t in trades:
            try:
                row = trade_row(t, now)
            except Exception as exc:  # one bad trade costs only itself (parsing only: no I/O here)
                self._reject("trade", exc)
                continue
            if wanted is not None and row[3] not in wanted:
                continue
            if lo - 1_000_000 <= row[1] <= hi + 1_000_000:
                rows.append(row)
        self.trades_fetched += len(rows)
        if rows:
            have = await self._stored_ids([r[0] for r in rows], lo - 2_000_000, hi + 2_000_000)
            rows = [r for r in rows if r[0] not in have]
            rows = list({r[0]: r for r in rows}.values())
        for r in rows:
            if not self.writer.add(r):
                raise RuntimeError("trades buffer full")
        if rows and not await self.writer.flush(30):
            raise RuntimeError("trades not committed within 30 s")
        self.trades_stored += len(rows)
        log.info(
            "trade backfill of window %s/%d (%s): %d trades fetched, %d new",
            w.instance_id,
            w.window_id,
            w.reason,
            self.trades_fetched,
            len(rows),
        )
        return len(rows)

    async def _stored_ids(self, ids: list[str], lo: int, hi: int) -> set[str]:
        """Trade ids this gatherer already holds (any time near the window)."""
        await self.writer.flush(10)  # the WebSocket copies received so far
        conn = await self._connect()
        try:
            cur = await conn.execute(
                "SELECT trade_id::text FROM trades WHERE trade_id = ANY(%s::uuid[]) AND exchange_ts BETWEEN %s AND %s",
                (ids, lo, hi),
            )
            return {r[0] for r in await cur.fetchall()}
        finally:
            await conn.close()
