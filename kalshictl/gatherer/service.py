"""The gatherer service: start-up in numbered phases, steady state, graceful shutdown (docs/gatherer.md).

Start-up (docs/gatherer.md "Start-up"; /health is served from the first moment): 1. connect the local database →
2. ``GET /exchange/status`` (wait with backoff while inactive) → 3. page ``GET /markets`` into the registry → 4. open
the WebSocket connections, subscribe the global channels and ``orderbook_delta`` for every market, sharded → 5. start
the snapshot poller → 6. record the downtime, healthy.

Shutdown, on :meth:`Gatherer.request_stop` / SIGTERM / SIGINT: stop receiving → flush all writers and the gap log →
close the sockets → close the database, within ``shutdown_timeout_s``.

The parts live in :class:`~kalshictl.gatherer.parts.Parts`; what they report is :mod:`kalshictl.gatherer.status`,
the once-a-second housekeeping :mod:`kalshictl.gatherer.maintenance`, markets learned after start-up
:mod:`kalshictl.gatherer.placement`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from typing import TYPE_CHECKING, Any

from kalshictl.backoff import Backoff, retry_until
from kalshictl.gatherer import status
from kalshictl.gatherer.backfill import TradeBackfill
from kalshictl.gatherer.connections import ConnectionPool
from kalshictl.gatherer.database import LocalDatabase
from kalshictl.gatherer.gaps import TABLE_CHANNEL, GapLog
from kalshictl.gatherer.listing import ApiKeyRejected as ApiKeyRejected  # exit 2: the CLI's and the tests' name
from kalshictl.gatherer.listing import load_markets, wait_until_active
from kalshictl.gatherer.maintenance import Maintenance
from kalshictl.gatherer.metrics import GathererMetrics
from kalshictl.gatherer.parts import Parts
from kalshictl.gatherer.placement import Placement, refresh_start
from kalshictl.gatherer.poller import SnapshotPoller
from kalshictl.gatherer.registry import MarketRegistry
from kalshictl.gatherer.router import Router
from kalshictl.gatherer.shards import Shards
from kalshictl.gatherer.storage import StorageMonitor
from kalshictl.gatherer.writers import WriterSet, make_writer
from kalshictl.schema import MARKET_DATA_TABLES
from kalshictl.units import now_us

if TYPE_CHECKING:
    import psycopg

    from kalshictl.config import GathererSettings
    from kalshictl.gatherer.gaps import Window
    from kalshictl.health.server import HealthServer
    from kalshictl.health.thresholds import HealthReport
    from kalshictl.kalshi.messages import Lifecycle
    from kalshictl.kalshi.rest import KalshiRest

log = logging.getLogger("kalshictl.gatherer")

DATABASE_RETRY = Backoff(0.5, 30.0)  # phase 1: 0.5 s, 1 s, … 30 s (wall time)
SUBSCRIBED_WITHIN_S = 30.0


class Gatherer:
    """One gatherer. ``await run()`` until :meth:`request_stop`; ``health_url`` once started (port 0 = free port)."""

    def __init__(self, settings: GathererSettings, *, progress: bool | None = None) -> None:
        self.settings = settings
        self.name = settings.name
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.metrics = GathererMetrics(settings.name)
        self.registry = MarketRegistry()
        w = settings.writer
        self.writers = WriterSet(
            {
                spec.name: make_writer(  # the deltas: a group of writers on their own connections
                    spec,
                    self._connect,
                    batch_rows=w.batch_rows,
                    flush_ms=w.flush_ms,
                    max_buffer_rows=w.max_buffer_rows,
                    max_buffer_bytes=w.max_buffer_bytes,
                    metrics=self.metrics,
                    on_overflow=self._on_overflow,
                )
                for spec in MARKET_DATA_TABLES
            }
        )
        # gap windows are written when they open, beside the table writers (kalshictl/gatherer/gaps.py)
        self.gaplog = GapLog(settings.name, self._connect, metrics=self.metrics, on_closed=self._on_window_closed)
        self.router = Router(
            settings.name,
            self.writers,
            self.metrics,
            self.gaplog,
            settings.websocket,
            on_lifecycle=self._on_lifecycle,
            on_unknown_market=self.registry.remove,
            on_unknown_frame=self._on_unknown_frame,
        )
        self.parts = Parts(
            settings=settings,
            metrics=self.metrics,
            registry=self.registry,
            writers=self.writers,
            gaplog=self.gaplog,
            router=self.router,
            storage=StorageMonitor(settings, self.metrics.registry),  # retention and disk (docs/retention.md)
            database=LocalDatabase(settings.name, self._connect, self.metrics),
        )
        self.maintenance = Maintenance(self.parts, lambda: self.phase == "running")
        self.http: HealthServer | None = None
        self.phase = "init"
        self.started_at = time.time()
        self.ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._down_since: int | None = None  # the coverage heartbeat found at start-up (phase 1)
        self._private_key: str | None = None  # resolved in phase 2
        self._refresh_from = 0  # the first registry refresh's min_updated_ts (s), from phase 3
        self._tasks: list[asyncio.Task[None]] = []

    # ----- public API -----------------------------------------------------------------------------------------
    @property
    def http_port(self) -> int | None:
        return self.http.port if self.http is not None else None

    @property
    def health_url(self) -> str | None:
        return f"{self.http.url}/health" if self.http is not None else None

    @property
    def base_url(self) -> str | None:
        return self.http.url if self.http is not None else None

    # the parts start-up builds (None before their phase)
    @property
    def rest(self) -> KalshiRest | None:
        return self.parts.rest

    @property
    def backfill(self) -> TradeBackfill | None:
        return self.parts.backfill

    @property
    def manager(self) -> ConnectionPool | None:
        return self.parts.manager

    @property
    def shards(self) -> Shards | None:
        return self.parts.shards

    @property
    def placement(self) -> Placement | None:
        return self.parts.placement

    @property
    def poller(self) -> SnapshotPoller | None:
        return self.parts.poller

    def request_stop(self) -> None:
        """Ask :meth:`run` to shut down gracefully (safe from signal handlers)."""
        self._stop.set()

    async def run(self) -> None:
        """Start, run until stopped, shut down gracefully."""
        try:
            await self.start()
            await self._stop.wait()
        finally:
            await self.shutdown()

    async def wait_ready(self, timeout: float) -> bool:
        """Wait for startup to complete."""
        try:
            await asyncio.wait_for(self.ready.wait(), timeout)
            return True
        except TimeoutError:
            return False

    def coverage(self) -> dict[str, int] | None:
        return status.coverage(self.parts)

    async def health(self) -> HealthReport:
        return await status.health(self.parts)

    async def status(self) -> dict[str, Any]:
        """Operator view for ``kalshictl gather status``."""
        return status.status(self.parts, phase=self.phase, started_at=self.started_at)

    async def refresh_registry(self) -> tuple[int, int]:
        """One registry refresh now (see :meth:`Placement.refresh_registry`); (0, 0) before phase 4."""
        if self.parts.placement is None:
            return 0, 0
        return await self.parts.placement.refresh_registry()

    # ----- start-up: the numbered phases of docs/gatherer.md "Start-up" -----------------------------------------
    async def start(self) -> None:
        """Run the start-up phases (returns once healthy, or early when a stop is requested)."""
        await self._serve_health()
        for phase in (
            self._connect_database,  # 1
            self._wait_for_exchange,  # 2
            self._load_markets,  # 3
            self._subscribe,  # 4
        ):
            if not await phase():  # stopped meanwhile
                return
        self._start_poller()  # 5
        self._resume_coverage()  # 6

    async def _serve_health(self) -> None:
        """0. /health, /metrics and /status from the first moment."""
        from kalshictl.health.server import HealthServer

        s = self.settings
        self.http = HealthServer(s.http.host, s.http.port, self.health, self.metrics.registry, self.status)
        await self.http.start()
        log.info("%s: /health on %s", self.name, self.health_url)

    async def _connect_database(self) -> bool:
        """1. The local database (retried while it is away); then the writers, the housekeeping, retention."""
        self.phase = "connect_db"

        async def attempt() -> None:
            self._down_since = await self.parts.database.open()

        def failed(exc: Exception, _delay: float) -> None:
            log.warning("%s: database not ready: %s", self.name, exc)

        if not await retry_until(attempt, self._stop, DATABASE_RETRY, on_failure=failed):
            return False
        self.writers.start()
        self.gaplog.start()
        self._tasks.append(asyncio.create_task(self.maintenance.run(), name="gatherer-maintenance"))
        self.parts.storage.start()
        return True

    async def _wait_for_exchange(self) -> bool:
        """2. The REST client and the trade backfill; wait (with backoff) until the exchange is active."""
        from kalshictl.kalshi.rest import KalshiRest

        self.phase = "exchange_status"
        ex = self.settings.exchange
        private_key = ex.private_key.resolve() if ex.private_key is not None else None
        rest = self.parts.rest = KalshiRest(
            ex.rest_url,
            requests_per_second=ex.requests_per_second,
            key_id=ex.api_key_id,
            private_key=private_key,
            timeout=ex.timeout_s,
        )
        self._private_key = private_key
        backfill = self.parts.backfill = TradeBackfill(
            rest,
            self.gaplog,
            self.writers["trades"],
            self._connect,
            tickers_writer=self.writers["tickers"],
            requests_per_second=ex.requests_per_second,
            on_markets=self._on_listed_markets,
            list_mve_separately=self._list_mve_separately,
        )
        backfill.start()
        return await wait_until_active(rest, self.settings, self._stop)

    async def _load_markets(self) -> bool:
        """3. Page ``GET /markets`` into the registry; a failed load is retried with backoff (/health 503
        meanwhile) and never ends the gatherer, unless the key is rejected."""
        self.phase = "load_markets"
        self._refresh_from = refresh_start()
        assert self.parts.rest is not None  # phase 2
        loaded = await load_markets(self.registry, self.parts.rest, self.settings, self._stop, progress=self.progress)
        self.metrics.markets.set(len(self.registry))
        return loaded

    async def _subscribe(self) -> bool:
        """4. Open the connections (global channels, order books), place every recordable market and subscribe."""
        assert self.parts.rest is not None  # phase 2
        self.phase = "subscribe"
        s = self.settings
        ex, w = s.exchange, s.websocket
        manager = self.parts.manager = ConnectionPool(
            w,
            ex.ws_url,
            self.metrics,
            on_open=self.router.on_open,
            on_frame=self.router.handle,
            on_close=self.router.on_close,
            is_healthy=self.router.conn_healthy,
            key_id=ex.api_key_id,
            private_key=self._private_key,
        )
        self.parts.shards = Shards(manager.book_conns, w.markets_per_subscription, w.subscriptions_per_connection)
        assert self.manager is not None and self.shards is not None
        self.router.attach(self.manager, self.shards)
        placement = self.parts.placement = Placement(
            self.name,
            self.registry,
            self.router,
            self.gaplog,
            self.shards,
            self.parts.rest,
            refresh_from=self._refresh_from,
        )
        wanted = self.registry.recordable()
        log_capacity = log.info if self.shards.capacity >= len(wanted) else log.error
        log_capacity(
            "%s: order-book capacity %d markets (%d connections x %d subscriptions x %d markets) for %d recordable"
            " markets listed",
            self.name,
            self.shards.capacity,
            w.orderbook_connections,
            w.subscriptions_per_connection,
            w.markets_per_subscription,
            len(wanted),
        )
        placement.place(wanted)
        if self.shards.unplaced:
            log.error("%s: %d markets cannot be placed: /health is unhealthy", self.name, len(self.shards.unplaced))
        await self.manager.start()
        if not await self.manager.wait_healthy(SUBSCRIBED_WITHIN_S):
            log.warning("%s: not every connection subscribed within 30s; continuing", self.name)
        return True

    def _start_poller(self) -> None:
        """5. The REST snapshot poller over the placed markets."""
        assert self.parts.rest is not None  # phase 2
        shards = self.shards
        self.parts.poller = SnapshotPoller(
            self.parts.rest,
            self.settings.snapshot_poller,
            self.writers["orderbook_snapshots"],
            lambda: list(shards.sub_of) if shards else [],
            self.settings.exchange.requests_per_second,
            verify=self.router.verify_book,
        )
        self.parts.poller.start()

    def _resume_coverage(self) -> None:
        """6. Coverage resumed now: the time this gatherer was not recording is a gap like any other, and windows a
        previous instance left open (kill -9) end here. Healthy."""
        self.gaplog.restarted(self._down_since, now_us())
        self._down_since = None
        self.phase = "running"
        status.update_metrics(self.parts)
        self.ready.set()
        target = self.manager.target if self.manager else 0
        log.info("%s: running: %d markets, %d connections", self.name, len(self.registry), target)

    # ----- collaborators' callbacks ---------------------------------------------------------------------------
    async def _connect(self) -> psycopg.AsyncConnection:
        from kalshictl.db.connect import connect_async

        return await connect_async(self.settings.database)

    def _list_mve_separately(self) -> bool:
        """Whether a listing needs its own ``mve_filter=only`` pass (the exchange's default listing left them out)."""
        return self.settings.websocket.record_mve and not self.registry.mve_in_default

    # the gap log's, the backfill's and the router's callbacks: served once the part they reach exists
    def _on_window_closed(self, w: Window) -> None:
        if self.parts.backfill is not None:  # from phase 2: windows that lost trades are fetched again
            self.parts.backfill.on_closed(w)

    def _on_listed_markets(self, markets: list[dict[str, Any]], w: Window) -> None:
        if self.parts.placement is not None:
            self.parts.placement.on_listed_markets(markets, w)

    async def _on_lifecycle(self, ev: Lifecycle) -> None:
        if self.parts.placement is not None:
            await self.parts.placement.on_lifecycle(ev)

    def _on_unknown_frame(self, ticker: str) -> None:
        if self.parts.placement is not None:
            self.parts.placement.on_unknown_frame(ticker)

    def _on_overflow(self, table: str, from_ts: int, to_ts: int, rows: int) -> None:
        log.error("%s: %s overflowed: %d rows dropped between %d and %d", self.name, table, rows, from_ts, to_ts)
        self.gaplog.record(channel=TABLE_CHANNEL.get(table, "*"), reason="overflow", from_ts=from_ts, to_ts=to_ts)

    # ----- shutdown -------------------------------------------------------------------------------------------
    async def shutdown(self) -> None:
        """Stop receiving → flush writers and the gap log → close sockets → close database; within the timeout."""
        if self.phase == "stopped":
            return
        self.phase = "stopping"
        p = self.parts
        deadline = time.monotonic() + self.settings.shutdown_timeout_s
        log.info("%s: shutting down", self.name)
        if p.backfill is not None:  # markets activated in a lifecycle window not yet listed: record them now
            await p.backfill.anchor_pending(min(10.0, self.settings.shutdown_timeout_s / 3))
        receiving_until = now_us()
        if p.manager is not None:
            p.manager.stop_receiving()  # 1
        if p.poller is not None:
            await p.poller.stop()
        if p.backfill is not None:
            await p.backfill.stop()  # an unfinished recovery stays 'pending'; the next start resumes it
        self.router.flush_pending_snapshots(now_us(), force=True)
        remaining = max(1.0, deadline - time.monotonic() - 2.0)
        flushed = await asyncio.gather(self.writers.flush_all(remaining), self.gaplog.flush(remaining))  # 2
        if not all(flushed):
            depth = {**self.writers.depth(), "sequence_gaps": len(self.gaplog)}
            log.error("%s: writers did not flush within the shutdown timeout: %s", self.name, depth)
        if self._down_since is None and self.ready.is_set():
            with contextlib.suppress(Exception):  # coverage ended when receiving stopped
                await asyncio.wait_for(self.maintenance.write_heartbeat(receiving_until), 5)
        if p.manager is not None:
            await p.manager.close()  # 3
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        left = max(0.5, deadline - time.monotonic())
        await asyncio.gather(self.writers.stop(timeout=left), self.gaplog.stop(timeout=left))  # 4
        await p.database.shut()
        if p.rest is not None:
            with contextlib.suppress(Exception):
                await p.rest.close()
        await p.storage.stop()
        if self.http is not None:
            await self.http.stop()
        self.phase = "stopped"
        log.info("%s: shutdown complete", self.name)
