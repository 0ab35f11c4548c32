"""The gatherer service: startup in the seed's order, steady state, health, graceful shutdown.

Startup (seed "Gatherer Startup"): connect the local database → ``GET /exchange/status`` (wait with backoff while
inactive) → page ``GET /markets`` into the registry → open the WebSocket connections → subscribe the global channels
→ subscribe ``orderbook_delta`` for every market, sharded → start the snapshot poller → healthy.

Shutdown (seed "Graceful Shutdown"), on :meth:`Gatherer.request_stop` / SIGTERM / SIGINT: stop receiving → flush all
writers → close the sockets → close the database, within ``shutdown_timeout_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sys
import time
from typing import TYPE_CHECKING, Any

from kalshictl.gatherer.backfill import TradeBackfill, created_us
from kalshictl.gatherer.connections import ConnectionManager
from kalshictl.gatherer.gaps import TABLE_CHANNEL, GapLog
from kalshictl.gatherer.metrics import GathererMetrics
from kalshictl.gatherer.poller import SnapshotPoller
from kalshictl.gatherer.registry import MarketRegistry
from kalshictl.gatherer.router import GAP_CLOCK_SLACK_US, Router
from kalshictl.gatherer.writers import ALL_TABLES, BatchWriter, WriterSet, now_us

if TYPE_CHECKING:
    import psycopg

    from kalshictl.config import GathererSettings
    from kalshictl.gatherer.gaps import Window
    from kalshictl.health.thresholds import HealthReport
    from kalshictl.kalshi.messages import Lifecycle

# How often each order-book subscription's seq is probed, so a lost frame followed by silence (an idle market) is
# detected within this time instead of at the market's next change.
SEQ_PROBE_INTERVAL_S = 5.0

log = logging.getLogger("kalshictl.gatherer")

ENSURE_PARTITIONS_SQL = (
    "SELECT CASE WHEN to_regprocedure('kalshi_ensure_partitions(bigint)') IS NULL THEN 0"
    " ELSE kalshi_ensure_partitions() END"
)
JOIN_EVENTS = frozenset(("created", "activated"))
UNKNOWN_MARKET_LOOKBACK_US = 600_000_000  # a lifecycle window this recent may have hidden a market's `created`
LEAVE_EVENTS = frozenset(("settled",))


class Gatherer:
    """One gatherer. ``await run()`` until :meth:`request_stop`; ``health_url`` once started (port 0 = free port)."""

    def __init__(self, settings: GathererSettings, *, progress: bool | None = None) -> None:
        self.settings = settings
        self.name = settings.name
        self.metrics = GathererMetrics(settings.name)
        self.registry = MarketRegistry()
        self.progress = sys.stderr.isatty() if progress is None else progress
        w = settings.writer
        writers: dict[str, BatchWriter] = {}
        self.gaplog = GapLog(settings.name, self._connect, metrics=self.metrics)
        for spec in ALL_TABLES:
            if spec.name == "sequence_gaps":
                writers[spec.name] = self.gaplog  # type: ignore[assignment]  # windows are written when they open
                continue
            writers[spec.name] = BatchWriter(
                spec,
                self._connect,
                batch_rows=w.batch_rows,
                flush_ms=w.flush_ms,
                max_buffer_rows=w.max_buffer_rows,
                max_buffer_bytes=w.max_buffer_bytes,
                metrics=self.metrics,
                on_overflow=self._on_overflow,
            )
        self.writers = WriterSet(writers)
        self.router = Router(
            settings.name,
            self.writers,
            self.metrics,
            use_yes_price=settings.websocket.use_yes_price,
            gaplog=self.gaplog,
        )
        self.router.on_lifecycle = self._on_lifecycle
        self.manager: ConnectionManager | None = None
        self.poller: SnapshotPoller | None = None
        self.backfill: TradeBackfill | None = None
        self.rest: Any = None
        self.http: Any = None
        self.phase = "init"
        self._down_since: int | None = None
        self.started_at = time.time()
        self.ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._db: psycopg.AsyncConnection | None = None
        self.db_connected = False
        self.db_ping_ms: float | None = None
        self._tasks: list[asyncio.Task] = []
        self._private_key: str | None = None

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

    # ----- startup --------------------------------------------------------------------------------------------
    async def _connect(self) -> psycopg.AsyncConnection:
        from kalshictl.db.connect import connect_async

        return await connect_async(self.settings.database)

    async def _stoppable_sleep(self, seconds: float) -> bool:
        """Sleep unless a stop is requested; returns True if stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)
        return self._stop.is_set()

    async def start(self) -> None:
        """Run the seed's startup sequence (returns once healthy or stopping)."""
        from kalshictl.health.server import HealthServer
        from kalshictl.kalshi.rest import KalshiRest

        s = self.settings
        self.http = HealthServer(s.http.host, s.http.port, self.health, self.metrics.registry, self.status)
        await self.http.start()
        log.info("%s: /health on %s", self.name, self.health_url)
        # 1. local database
        self.phase = "connect_db"
        backoff = 0.5
        while not self._stop.is_set():
            try:
                await self._db_ping()
                if self._db is not None:
                    await self._db.execute(ENSURE_PARTITIONS_SQL)
                    self._down_since = await self._read_heartbeat()
                    break
            except Exception as exc:
                log.warning("%s: database not ready: %s", self.name, exc)
            if await self._stoppable_sleep(backoff):
                return
            backoff = min(30.0, backoff * 2)
        self.writers.start()
        self._tasks.append(asyncio.create_task(self._maintenance(), name="gatherer-maintenance"))
        # 2. exchange status
        self.phase = "exchange_status"
        ex = s.exchange
        if ex.private_key is not None:
            self._private_key = ex.private_key.resolve()
        self.rest = KalshiRest(
            ex.rest_url,
            requests_per_second=ex.requests_per_second,
            key_id=ex.api_key_id,
            private_key=self._private_key,
            timeout=ex.timeout_s,
        )
        self.backfill = TradeBackfill(
            self.rest,
            self.gaplog,
            self.writers["trades"],
            self._connect,
            tickers_writer=self.writers["tickers"],
            requests_per_second=ex.requests_per_second,
        )
        self.gaplog.on_closed = self.backfill.on_closed
        self.backfill.on_markets = self._on_listed_markets
        self.backfill.start()
        backoff = 1.0
        while not self._stop.is_set():
            try:
                st = await self.rest.get("/exchange/status")
                if (st or {}).get("exchange_active"):
                    break
                log.warning("%s: exchange inactive; waiting", self.name)
            except Exception as exc:
                log.warning("%s: GET /exchange/status failed: %s", self.name, exc)
            if await self._stoppable_sleep(backoff * random.uniform(0.5, 1.0)):
                return
            backoff = min(60.0, backoff * 2)
        # 3. market registry
        self.phase = "load_markets"
        await self.registry.load_with_retry(self._load_registry, self._stop)  # never exits on a failed load
        if self._stop.is_set():
            return
        self.metrics.markets.set(len(self.registry))
        # 4-6. websocket connections and subscriptions
        self.phase = "subscribe"
        self.manager = ConnectionManager(
            s.websocket, ex.ws_url, self.router, self.metrics, key_id=ex.api_key_id, private_key=self._private_key
        )
        self.router.manager = self.manager
        await self.manager.start(self.registry.tickers())
        if not await self.manager.wait_subscribed(30.0):
            log.warning("%s: not every connection subscribed within 30s; continuing", self.name)
        # 7. snapshot poller
        self.poller = SnapshotPoller(
            self.rest,
            s.snapshot_poller,
            self.writers["orderbook_snapshots"],
            lambda: list(self.manager.shard_of) if self.manager else [],
            ex.requests_per_second,
        )
        self.poller.start()
        # coverage resumed now: the time this gatherer was not recording is a gap like any other, and windows a
        # previous instance left open (kill -9) end here
        self.gaplog.restarted(self._down_since, now_us())
        self._down_since = None
        self.phase = "running"
        self.ready.set()
        log.info("%s: running: %d markets, %d connections", self.name, len(self.registry), self.manager.target)

    async def _load_registry(self) -> None:
        statuses = self.settings.market_status
        if not self.progress:
            await self.registry.load(self.rest, statuses)
            return
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), transient=True) as bar:
            task = bar.add_task("loading markets", total=None)

            def progress(pages: int, markets: int) -> None:
                bar.update(task, description=f"loading markets: {markets:,} ({pages} pages)")

            await self.registry.load(self.rest, statuses, progress=progress)

    # ----- steady state ---------------------------------------------------------------------------------------
    async def _db_ping(self) -> None:
        from kalshictl.db.connect import ping_async

        try:
            if self._db is None or self._db.closed:
                self._db = await asyncio.wait_for(self._connect(), 5)
                await self._db.set_autocommit(True)
            self.db_ping_ms = await asyncio.wait_for(ping_async(self._db), 5)
            self.db_connected = True
            self.metrics.db_ping.set(self.db_ping_ms / 1000.0)
            self.metrics.db_connected.set(1)
        except Exception:
            self.db_connected = False
            self.db_ping_ms = None
            self.metrics.db_ping.set(float("nan"))
            self.metrics.db_connected.set(0)
            if self._db is not None:
                with contextlib.suppress(Exception):
                    await self._db.close()
            self._db = None
            raise

    async def _read_heartbeat(self) -> int | None:
        """When this gatherer last had everything it received committed (None on a fresh database)."""
        try:
            cur = await self._db.execute("SELECT last_alive_us FROM gatherer_meta")  # type: ignore[union-attr]
            row = await cur.fetchone()
        except Exception as exc:  # schema older than migration 002
            log.warning("%s: no coverage heartbeat (%s); run `kalshictl migrate`", self.name, exc)
            return None
        return row[0] if row else None

    async def _write_heartbeat(self, until_us: int | None = None) -> None:
        """Advance the coverage heartbeat to what is committed (capped at ``until_us``)."""
        now = now_us()
        through = self.writers.committed_through_us(now if until_us is None else min(now, until_us))
        if self._db is not None and not self._db.closed:
            await self._db.execute("UPDATE gatherer_meta SET last_alive_us = %s", (through,))

    async def _maintenance(self) -> None:
        last_partitions = time.monotonic()
        last_snap_retry = time.monotonic()
        last_probe = time.monotonic()
        while True:
            await asyncio.sleep(1.0)
            with contextlib.suppress(Exception):
                await self._db_ping()
            if self.phase == "running":
                with contextlib.suppress(Exception):
                    await self._write_heartbeat()
            now = time.monotonic()
            if now - last_partitions > 3600 and self._db is not None:
                with contextlib.suppress(Exception):
                    await self._db.execute(ENSURE_PARTITIONS_SQL)
                    last_partitions = now
            self.router.flush_pending_snapshots(now_us())
            if self.manager is not None and now - last_probe >= SEQ_PROBE_INTERVAL_S:
                last_probe = now
                for conn in self.manager.book_conns:
                    self.router.spawn(conn.probe_seq())
            if now - last_snap_retry > 5:
                last_snap_retry = now
                self.router.retry_stale_snapshots()
            m = self.metrics
            m.markets.set(len(self.registry))
            if self.manager is not None:
                m.connections.labels(state="healthy").set(self.manager.healthy_count())
                m.connections.labels(state="connected").set(self.manager.connected_count())
            if self.rest is not None:
                m.rest_requests.set(self.rest.requests)
                m.rest_throttled.set(self.rest.throttled)

    async def _on_lifecycle(self, ev: Lifecycle) -> None:
        if self.manager is None:
            return
        t = ev.ticker
        if ev.event_type in JOIN_EVENTS:
            self.registry.add(t, "initialized" if ev.event_type == "created" else "active")
            if t not in self.manager.shard_of:
                # the market's book is not ours until its first snapshot: from its creation (now, less clock slack),
                # or — its `created` missed while the lifecycle channel was blind — from that window's start
                start = now_us() - GAP_CLOCK_SLACK_US
                blind = self.gaplog.last_from.get("market_lifecycle_v2")
                if ev.event_type != "created" and blind is not None and start - blind < UNKNOWN_MARKET_LOOKBACK_US:
                    start = min(start, blind)
                self._record_unknown([t], start)
                await self.manager.add_markets([t])
        elif ev.event_type in LEAVE_EVENTS:
            if self.registry.remove(t) or t in self.manager.shard_of:
                await self.manager.remove_markets([t])
        elif t in self.registry:
            status = {"deactivated": "inactive", "determined": "determined"}.get(ev.event_type)
            if status:
                self.registry.add(t, status)

    def _on_listed_markets(self, markets: list[dict], w: Window) -> None:
        """A re-anchor listing after a ticker/lifecycle window: markets this gatherer does not hold (created or
        re-listed while the lifecycle channel was blind) are subscribed now, and their order books from the window's
        start (or their creation) until their first snapshot are recorded as an ``outage`` window."""
        if self.manager is None:
            return
        new: list[str] = []
        start = w.from_ts
        for m in markets:
            t, status = m.get("ticker"), m.get("status")
            if not t or t in self.manager.shard_of or status in ("finalized", "settled"):
                continue
            self.registry.add(t, status or "active")
            new.append(t)
            with contextlib.suppress(Exception):
                start = min(start, created_us(m["created_time"]))
        if not new:
            return
        self._record_unknown(new, start)
        log.warning("%s: %d markets unknown before window %s/%d: subscribing", self.name, len(new), w.instance_id,
                    w.window_id)  # fmt: skip
        self.router.spawn(self.manager.add_markets(new))

    def _record_unknown(self, tickers: list[str], start: int) -> None:
        """Open one window over markets subscribed late (from ``start`` until each one's first snapshot)."""
        # not invalidated: a new subscription's stream is continuous from its snapshot (no cutoff needed)
        self.router.windows.open(
            tickers, channel="orderbook_delta", reason="outage", from_ts=start, detected_at=now_us()
        )

    def _on_overflow(self, table: str, from_ts: int, to_ts: int, rows: int) -> None:

        if table == "sequence_gaps":
            return
        log.error("%s: %s overflowed: %d rows dropped between %d and %d", self.name, table, rows, from_ts, to_ts)
        self.gaplog.record(channel=TABLE_CHANNEL.get(table, "*"), reason="overflow", from_ts=from_ts, to_ts=to_ts)

    # ----- health / status ------------------------------------------------------------------------------------
    async def health(self) -> HealthReport:
        """The seed's /health JSON (via gatherer_health)."""
        from kalshictl.health.thresholds import gatherer_health

        mgr = self.manager
        target = mgr.target if mgr else self.settings.websocket.connections
        report = gatherer_health(
            db_connected=self.db_connected,
            db_ping_ms=self.db_ping_ms,
            ws_connections=mgr.connected_count() if mgr else 0,
            ws_healthy=mgr.healthy_count() if mgr else 0,
            ws_target=target,
            markets=len(self.registry),
            buffer_full=self.writers.full,
        )
        return self.registry.annotate(report)  # a failed registry load: 503 with the reason

    async def status(self) -> dict[str, Any]:
        """Operator view for ``kalshictl gather status``."""
        mgr = self.manager
        msgs = {}
        for metric in self.metrics.messages.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    msgs[sample.labels["type"]] = int(sample.value)
        last = self.router.last_exchange_ts
        return {
            "name": self.name,
            "phase": self.phase,
            "uptime_s": round(time.time() - self.started_at, 1),
            "registry": {
                "markets": len(self.registry),
                "load_seconds": self.registry.load_seconds,
                "pages": self.registry.pages,
            },
            "connections": {
                "target": mgr.target if mgr else self.settings.websocket.connections,
                "connected": mgr.connected_count() if mgr else 0,
                "healthy": mgr.healthy_count() if mgr else 0,
                "reconnects": sum(c.reconnects for c in mgr.connections) if mgr else 0,
                "subscribed_markets": len(mgr.shard_of) if mgr else 0,
                "unplaced_markets": len(mgr.unplaced) if mgr else 0,
                "detail": [c.status() for c in mgr.connections] if mgr else [],
            },
            "messages": msgs,
            "lag_s": round(max(0.0, (now_us() - last) / 1e6), 3) if last else None,
            "parse_errors": self.router.parse_errors,
            "duplicates_dropped": self.router.duplicates,
            "resyncing_markets": len(self.router.sync.awaiting),
            "gap_windows_open": self.gaplog.open_windows(),
            "backfill": self.backfill.status() if self.backfill else None,
            "writers": self.writers.stats(),
            "buffer_rows": sum(self.writers.depth().values()),
            "rest": {"requests": getattr(self.rest, "requests", 0), "throttled": getattr(self.rest, "throttled", 0)},
            "poller": {"passes": self.poller.passes, "snapshots": self.poller.snapshots} if self.poller else None,
            "database": {"connected": self.db_connected, "ping_ms": self.db_ping_ms},
        }

    # ----- shutdown -------------------------------------------------------------------------------------------
    async def shutdown(self) -> None:
        """Seed order: stop receiving → flush writers → close sockets → close database; within the timeout."""
        if self.phase == "stopped":
            return
        self.phase = "stopping"
        deadline = time.monotonic() + self.settings.shutdown_timeout_s
        log.info("%s: shutting down", self.name)
        receiving_until = now_us()
        if self.manager is not None:
            self.manager.stop_receiving()  # 1
        if self.poller is not None:
            await self.poller.stop()
        if self.backfill is not None:
            await self.backfill.stop()  # an unfinished recovery stays 'pending'; the next start resumes it
        self.router.flush_pending_snapshots(now_us(), force=True)  # open gap windows are already in the database
        remaining = max(1.0, deadline - time.monotonic() - 2.0)
        flushed = await self.writers.flush_all(remaining)  # 2
        if not flushed:
            log.error("%s: writers did not flush within the shutdown timeout: %s", self.name, self.writers.depth())
        if self._down_since is None and self.ready.is_set():
            with contextlib.suppress(Exception):  # coverage ended when receiving stopped
                await asyncio.wait_for(self._write_heartbeat(receiving_until), 5)
        if self.manager is not None:
            await self.manager.close()  # 3
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await self.writers.stop(timeout=max(0.5, deadline - time.monotonic()))  # 4
        if self._db is not None:
            with contextlib.suppress(Exception):
                await self._db.close()
        if self.rest is not None:
            with contextlib.suppress(Exception):
                await self.rest.close()
        if self.http is not None:
            await self.http.stop()
        self.db_connected = False
        self.phase = "stopped"
        log.info("%s: shutdown complete", self.name)
