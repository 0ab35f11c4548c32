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

from kalshictl.errors import ExitCode, KalshiCtlError
from kalshictl.gatherer.backfill import LIFECYCLE_CHANNELS, TradeBackfill, created_us
from kalshictl.gatherer.connections import ConnectionPool
from kalshictl.gatherer.gaps import TABLE_CHANNEL, GapLog
from kalshictl.gatherer.metrics import GathererMetrics
from kalshictl.gatherer.poller import SnapshotPoller
from kalshictl.gatherer.registry import MarketRegistry, recordable
from kalshictl.gatherer.router import Router
from kalshictl.gatherer.router_state import GAP_CLOCK_SLACK_US, ORDERBOOK
from kalshictl.gatherer.shards import Shards
from kalshictl.gatherer.storage import StorageMonitor
from kalshictl.gatherer.writers import BatchWriter, WriterGroup, WriterSet, make_writer, now_us
from kalshictl.kalshi.rest import KalshiApiError
from kalshictl.kalshi.validate import valid_markets
from kalshictl.schema import GAPS, MARKET_DATA_TABLES

if TYPE_CHECKING:
    import psycopg

    from kalshictl.config import GathererSettings
    from kalshictl.health.thresholds import HealthReport
    from kalshictl.kalshi.messages import Lifecycle

log = logging.getLogger("kalshictl.gatherer")

ENSURE_PARTITIONS_SQL = (
    "SELECT CASE WHEN to_regprocedure('kalshi_ensure_partitions(bigint)') IS NULL THEN 0"
    " ELSE kalshi_ensure_partitions() END"
)
UNKNOWN_MARKET_LOOKBACK_US = 600_000_000  # a lifecycle window this recent may have hidden a market's `created`
REFRESH_SLACK_S = 5  # min_updated_ts reaches back this far before the previous refresh


class ApiKeyRejected(KalshiCtlError):
    """The exchange refused the configured API key (HTTP 401/403): restarting will not help."""

    exit_code = ExitCode.USAGE


class Gatherer:
    """One gatherer. ``await run()`` until :meth:`request_stop`; ``health_url`` once started (port 0 = free port)."""

    def __init__(self, settings: GathererSettings, *, progress: bool | None = None) -> None:
        self.settings = settings
        self.name = settings.name
        self.metrics = GathererMetrics(settings.name)
        self.registry = MarketRegistry()
        self.progress = sys.stderr.isatty() if progress is None else progress
        w = settings.writer
        writers: dict[str, BatchWriter | WriterGroup | GapLog] = {}
        self.gaplog = GapLog(settings.name, self._connect, metrics=self.metrics)
        for spec in MARKET_DATA_TABLES:
            writers[spec.name] = make_writer(  # the deltas: a group of writers on their own connections
                spec,
                self._connect,
                batch_rows=w.batch_rows,
                flush_ms=w.flush_ms,
                max_buffer_rows=w.max_buffer_rows,
                max_buffer_bytes=w.max_buffer_bytes,
                metrics=self.metrics,
                on_overflow=self._on_overflow,
            )
        writers[GAPS.name] = self.gaplog  # gap windows are written when they open (kalshictl/gatherer/gaps.py)
        self.writers = WriterSet(writers)
        self.backfill: TradeBackfill | None = None
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
        self.storage = StorageMonitor(settings, self.metrics.registry)  # retention and disk (docs/retention.md)
        self.manager: ConnectionPool | None = None
        self.shards: Shards | None = None
        self.poller: SnapshotPoller | None = None
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
        self.storage.start()
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
        self.gaplog.coverage_floors.append(self.backfill.unanchored_since)
        self.backfill.on_markets = self._on_listed_markets
        self.backfill.list_mve_separately = lambda: s.websocket.record_mve and not self.registry.mve_in_default
        self.backfill.start()
        backoff = 1.0
        while not self._stop.is_set():
            try:
                st = await self.rest.get("/exchange/status")
                if (st or {}).get("exchange_active"):
                    break
                log.warning("%s: exchange inactive; waiting", self.name)
            except KalshiApiError as exc:
                self._fail_on_auth(exc)
                log.warning("%s: GET /exchange/status failed: %s", self.name, exc)
            except Exception as exc:
                log.warning("%s: GET /exchange/status failed: %s", self.name, exc)
            if await self._stoppable_sleep(backoff * random.uniform(0.5, 1.0)):
                return
            backoff = min(60.0, backoff * 2)
        # 3. market registry
        self.phase = "load_markets"
        self._refresh_from = now_us() // 1_000_000 - REFRESH_SLACK_S  # on the one clock, like the exchange's times
        # never exits on a failed load (retried with backoff, /health 503 meanwhile) unless the key is rejected
        await self.registry.load_with_retry(self._load_registry_or_fail, self._stop, fatal=(ApiKeyRejected,))
        if self._stop.is_set():
            return
        self.metrics.markets.set(len(self.registry))
        # 4-6. websocket connections and subscriptions
        self.phase = "subscribe"
        w = s.websocket
        self.manager = ConnectionPool(
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
        self.shards = Shards(self.manager.book_conns, w.markets_per_subscription, w.subscriptions_per_connection)
        self.router.attach(self.manager, self.shards)
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
        self._place(wanted)
        if self.shards.unplaced:
            log.error("%s: %d markets cannot be placed: /health is unhealthy", self.name, len(self.shards.unplaced))
        await self.manager.start()
        if not await self.manager.wait_healthy(30.0):
            log.warning("%s: not every connection subscribed within 30s; continuing", self.name)
        # 7. snapshot poller
        self.poller = SnapshotPoller(
            self.rest,
            s.snapshot_poller,
            self.writers["orderbook_snapshots"],
            lambda: list(self.shards.sub_of) if self.shards else [],
            ex.requests_per_second,
            verify=self.router.verify_book,
        )
        self.poller.start()
        # coverage resumed now: the time this gatherer was not recording is a gap like any other, and windows a
        # previous instance left open (kill -9) end here
        self.gaplog.restarted(self._down_since, now_us())
        self._down_since = None
        self.phase = "running"
        self._update_metrics()
        self.ready.set()
        log.info("%s: running: %d markets, %d connections", self.name, len(self.registry), self.manager.target)

    def _fail_on_auth(self, exc: KalshiApiError) -> None:
        if exc.status in (401, 403):
            raise ApiKeyRejected(
                f"the exchange rejected the API key (HTTP {exc.status}) at {self.settings.exchange.rest_url}",
                hint="check exchange.api_key_id and exchange.private_key (a key belongs to one environment:"
                " production or demo)",
            ) from None

    async def _load_registry_or_fail(self) -> None:
        """One registry load; a rejected API key becomes :class:`ApiKeyRejected` (exit 2)."""
        try:
            await self._load_registry()
        except KalshiApiError as exc:
            self._fail_on_auth(exc)
            raise

    async def _load_registry(self) -> None:
        statuses = self.settings.market_status
        if not self.progress:
            await self.registry.load(self.rest, statuses, mve=self.settings.websocket.record_mve)
            return
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), transient=True) as bar:
            task = bar.add_task("loading markets", total=None)

            def progress(pages: int, markets: int) -> None:
                bar.update(task, description=f"loading markets: {markets:,} ({pages} pages)")

            await self.registry.load(self.rest, statuses, progress=progress, mve=self.settings.websocket.record_mve)

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
        last_refresh = time.monotonic()
        w = self.settings.websocket
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
            if self.manager is not None and now - last_probe >= w.seq_probe_interval_s:
                last_probe = now
                # probes never eat into the budget that resyncs need
                self.router.probe_all(min_tokens=w.command_burst / 2)
            if now - last_snap_retry > 5:
                last_snap_retry = now
                self.router.retry_stale_snapshots()
            if self.phase == "running" and now - last_refresh >= w.registry_refresh_s:
                last_refresh = now
                try:
                    await self.refresh_registry()
                except Exception as exc:
                    log.warning("%s: registry refresh failed: %s", self.name, exc)
            self._update_metrics()

    def _update_metrics(self) -> None:
        m = self.metrics
        m.markets.set(len(self.registry))
        if self.manager is not None:
            m.connections.labels(state="healthy").set(self.manager.healthy_count())
            m.connections.labels(state="connected").set(self.manager.connected_count())
            m.commands_last_minute.set(max((c.bucket.last_minute() for c in self.manager.connections), default=0))
        cov = self.coverage()
        if cov is not None:
            for k in ("placed", "unplaced", "resyncing", "untrusted_too_long"):
                m.coverage.labels(state=k).set(cov[k])
            m.capacity.set(cov["capacity"])
            m.subscriptions.set(cov["subscriptions"])
        if self.rest is not None:
            m.rest_requests.set(self.rest.requests)
            m.rest_throttled.set(self.rest.throttled)

    async def refresh_registry(self) -> tuple[int, int]:
        """``GET /markets?min_updated_ts=…``: subscribe markets that became recordable, unsubscribe those that
        stopped, and place any recordable market that is not placed yet. Returns (joined, left)."""
        since = self._refresh_from
        self._refresh_from = now_us() // 1_000_000 - REFRESH_SLACK_S
        join, leave = await self.registry.refresh(self.rest, since)
        if self.shards is not None:
            if leave:
                self.router.remove_markets(leave)
            # a market placed only now missed its lifecycle event here (created or re-activated after ``since``, or
            # while a lifecycle channel was blind): its book is not ours from then until its first snapshot
            start = min(since * 1_000_000, self._learned_from(created=False))
            self._place(self.registry.recordable(), start)
        if join or leave:
            log.info("%s: registry refresh: %d markets joined, %d left", self.name, len(join), len(leave))
        return len(join), len(leave)

    async def _on_lifecycle(self, ev: Lifecycle) -> None:
        if self.shards is None:
            return
        t = ev.ticker
        match ev.event_type:
            case "created" | "activated" | "deactivated":
                status = {"created": "initialized", "activated": "active"}.get(ev.event_type, "inactive")
                self.registry.add(t, status)
                # a paused market stays subscribed: its `activated` may come any moment
                self._place([t], self._learned_from(created=ev.event_type == "created"))
            case "settled" | "finalized":
                self.registry.remove(t)
                if t in self.shards.sub_of or t in self.shards.unplaced:
                    self.router.remove_markets([t])
            case "determined" if t in self.registry:
                self.registry.add(t, "determined")
            case _:
                pass

    def _learned_from(self, *, created: bool) -> int:
        """From when the book of a market learned now is not ours (until its first snapshot): its creation (now, less
        clock slack), or — its ``created`` missed while a lifecycle channel was blind — that window's start."""
        start = now_us() - GAP_CLOCK_SLACK_US
        blinds = [self.gaplog.last_from[c] for c in LIFECYCLE_CHANNELS if c in self.gaplog.last_from]
        blind = max(blinds, default=None)  # the latest window of either lifecycle channel
        if not created and blind is not None and start - blind < UNKNOWN_MARKET_LOOKBACK_US:
            start = min(start, blind)
        return start

    def _on_unknown_frame(self, ticker: str) -> None:
        """Order-book frames of a market placed nowhere arrived on one of our sids: the exchange holds it live, so it
        is learned like a market whose ``activated`` arrives now, through the one placement. (A market removed lately
        is not learned again: its last frames come from its old sid, :meth:`Router._not_left_here`.)"""
        if ticker not in self.registry:
            self.registry.add(ticker, "active")
        elif not recordable(self.registry.status(ticker)):
            return
        if self._place([ticker], self._learned_from(created=False)):
            log.warning("%s: order-book frames of %s, placed nowhere: subscribing it", self.name, ticker)

    def _place(self, tickers: list[str], start: int | None = None) -> list[str]:
        """The one placement of markets learned on any path (startup, lifecycle ``created``/``activated``/
        ``deactivated``, a window's re-anchor listing, the registry refresh): each recordable market not placed yet is
        placed once — a market named twice, or again while its ``subscribe``/``add_markets`` is in flight, is
        already placed (docs/gatherer.md "Placement"). With ``start``, the books of the markets placed now are an
        ``outage`` from then until each one's first snapshot. Returns the markets placed now."""
        if self.shards is None:
            return []
        placed = self.shards.sub_of
        new = [t for t in dict.fromkeys(tickers) if t not in placed and recordable(self.registry.status(t))]
        if new:
            self.router.add_markets(new)
            if start is not None:
                self.router.record_late(new, start)
        return new

    def _on_listed_markets(self, markets: list[dict], w: Any) -> None:
        """A re-anchor listing after a ticker/lifecycle window (the trade backfill's): markets this gatherer does not
        hold (created or re-listed while the lifecycle channel was blind) are subscribed now, and their order books
        from the window's start (or their creation) until their first snapshot are recorded as an ``outage``. After a
        lifecycle window, a listed market it does not hold that is not recordable now (settled meanwhile) may have
        been active during the window: its book over the window is recorded lost too. Items are validated as the
        registry's own listings are (a bad one is skipped and counted in /health)."""
        if self.shards is None:
            return
        found: dict[str, str] = {}
        passed: list[str] = []
        start = w.from_ts
        for m in valid_markets(markets, self.registry.rejected):
            t = m["ticker"]
            status = m.get("status")
            status = status if isinstance(status, str) and status else "active"
            if t in self.shards.sub_of or t in found:
                continue
            if not recordable(status):
                passed.append(t)
                continue
            found[t] = status
            with contextlib.suppress(Exception):
                start = min(start, created_us(m["created_time"]))
        if passed and w.channel in LIFECYCLE_CHANNELS:
            self.gaplog.record(
                channel=ORDERBOOK, reason="outage", from_ts=w.from_ts, to_ts=now_us(), tickers=sorted(set(passed))
            )
        for t, status in found.items():
            self.registry.add(t, status)
        new = self._place(list(found), start)
        if new:
            log.warning("%s: %d markets unknown before a lifecycle window: subscribing", self.name, len(new))

    def _on_overflow(self, table: str, from_ts: int, to_ts: int, rows: int) -> None:
        if table == "sequence_gaps":
            return
        log.error("%s: %s overflowed: %d rows dropped between %d and %d", self.name, table, rows, from_ts, to_ts)
        self.gaplog.record(channel=TABLE_CHANNEL.get(table, "*"), reason="overflow", from_ts=from_ts, to_ts=to_ts)

    # ----- health / status ------------------------------------------------------------------------------------
    def coverage(self) -> dict[str, int] | None:
        """Order-book coverage: recordable, placed, unplaced, resyncing, untrusted_too_long, capacity, subscriptions."""
        from kalshictl.health.thresholds import UNTRUSTED_UNHEALTHY_S

        sh = self.shards
        if sh is None:
            return None
        return {
            "recordable": sh.placed + len(sh.unplaced),
            "placed": sh.placed,
            "unplaced": len(sh.unplaced),
            "resyncing": len(self.router.sync.awaiting),
            "untrusted_too_long": self.router.untrusted_longer_than(UNTRUSTED_UNHEALTHY_S),
            "capacity": sh.capacity,
            "subscriptions": sum(1 for _ in sh.all_subs()),
        }

    async def health(self) -> HealthReport:
        """The seed's /health JSON (via gatherer_health), with the coverage component."""
        from kalshictl.health.thresholds import gatherer_health

        mgr = self.manager
        target = mgr.target if mgr else self.settings.websocket.connections
        cov = self.coverage()
        if cov is not None:
            cov = {k: v for k, v in cov.items() if k != "subscriptions"}
        report = gatherer_health(
            db_connected=self.db_connected,
            db_ping_ms=self.db_ping_ms,
            ws_connections=mgr.connected_count() if mgr else 0,
            ws_healthy=mgr.healthy_count() if mgr else 0,
            ws_target=target,
            markets=len(self.registry),
            buffer_full=self.writers.full,
            coverage=cov,
        )
        report = self.registry.annotate(report)  # a failed registry load: 503 with the reason
        return self.storage.annotate(report)  # disk free space and partitions held back by retention

    async def status(self) -> dict[str, Any]:
        """Operator view for ``kalshictl gather status``."""
        mgr = self.manager
        msgs = {}
        for metric in self.metrics.messages.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    msgs[sample.labels["type"]] = int(sample.value)
        last = self.router.last_exchange_ts
        cov = self.coverage() or {}
        r = self.router
        detail = []
        if mgr is not None:
            for c in mgr.connections:
                d = c.status()
                d["healthy"] = mgr.is_healthy(c)
                if c.kind == "orderbook":
                    d["ack_mode"] = r.states[c].ack_mode
                    d["subscriptions"] = r.sub_status(c)
                else:
                    d["channels"] = list(r.states[c].channels)
                    d["sids"] = dict(r.states[c].channel_sid)
                detail.append(d)
        per_min = [c.bucket.last_minute() for c in mgr.connections] if mgr else []
        return {
            "name": self.name,
            "phase": self.phase,
            "uptime_s": round(time.time() - self.started_at, 1),
            "registry": {
                "markets": len(self.registry),
                "load_seconds": self.registry.load_seconds,
                "pages": self.registry.pages,
                "refreshes": self.registry.refreshes,
                "refreshed_at": self.registry.refreshed_at,
            },
            "coverage": cov,
            "connections": {
                "target": mgr.target if mgr else self.settings.websocket.connections,
                "connected": mgr.connected_count() if mgr else 0,
                "healthy": mgr.healthy_count() if mgr else 0,
                "reconnects": sum(c.reconnects for c in mgr.connections) if mgr else 0,
                "subscribed_markets": cov.get("placed", 0),
                "unplaced_markets": cov.get("unplaced", 0),
                "commands_last_minute_max": max(per_min, default=0),
                "commands_per_minute_budget": self.settings.websocket.commands_per_minute,
                "ack_modes": r.ack_modes(),
                "detail": detail,
            },
            "sequence": {
                "tail_gaps": r.stats.tail_gaps,
                "ambiguous_acks": r.stats.ambiguous_acks,
                "digest_mismatches": r.stats.digest_mismatches,
                "rest_suspects": r.stats.rest_suspects,
                "orphan_frames": r.stats.orphan_frames,
                "stray_frames": r.stats.stray_frames,
                "deltas_without_ts": r.stats.no_ts_deltas,
                "open_windows": r.open_windows(),
                "resync_p50_s": r.resync_quantile(0.5),
                "resync_p99_s": r.resync_quantile(0.99),
            },
            "messages": msgs,
            "lag_s": round(max(0.0, (now_us() - last) / 1e6), 3) if last else None,
            "parse_errors": r.stats.parse_errors,
            "duplicates_dropped": r.stats.duplicates,
            "resyncing_markets": len(r.sync.awaiting),
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
        if self.backfill is not None:  # markets activated in a lifecycle window not yet listed: record them now
            await self.backfill.anchor_pending(min(10.0, self.settings.shutdown_timeout_s / 3))
        receiving_until = now_us()
        if self.manager is not None:
            self.manager.stop_receiving()  # 1
        if self.poller is not None:
            await self.poller.stop()
        if self.backfill is not None:
            await self.backfill.stop()  # an unfinished recovery stays 'pending'; the next start resumes it
        self.router.flush_pending_snapshots(now_us(), force=True)
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
        await self.storage.stop()
        if self.http is not None:
            await self.http.stop()
        self.db_connected = False
        self.phase = "stopped"
        log.info("%s: shutdown complete", self.name)
