"""The :class:`Deduplicator` service: the startup order of docs/deduplicator.md, /health, and graceful shutdown."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kalshictl.backoff import WALL
from kalshictl.dedup.gaps import Peer
from kalshictl.dedup.loops import OnMerge, SyncLoop
from kalshictl.dedup.metrics import DedupMetrics
from kalshictl.errors import KalshiCtlError, summarize
from kalshictl.health.disk import DiskWatch
from kalshictl.schema import EVENT_TABLES
from kalshictl.units import now_us

if TYPE_CHECKING:
    import psycopg

    from kalshictl.config import DedupSettings, GathererSource
    from kalshictl.dedup.market_sync import MarketSync
    from kalshictl.health.server import HealthServer
    from kalshictl.health.thresholds import HealthReport

log = logging.getLogger("kalshictl.dedup")

LOCK_KEY = 0x6B616C7368690005  # one deduplicator per production database
PARTITION_TOP_UP_S = 3600.0


class Deduplicator:
    """Merge every gatherer into production exactly once; see docs/deduplicator.md.

    ``await run()`` starts, serves until :meth:`request_stop`, then shuts down (both in the order of
    docs/deduplicator.md).
    """

    def __init__(self, settings: DedupSettings, *, on_merge: OnMerge | None = None) -> None:
        self.settings = settings
        self.metrics = DedupMetrics()
        self.disk = DiskWatch(settings.disk, self.metrics.registry)  # production's disk (docs/retention.md)
        self.on_merge = on_merge
        self.phase = "created"
        self._stop = asyncio.Event()
        self._sync_stop = asyncio.Event()
        self._started = asyncio.Event()
        self.production: psycopg.AsyncConnection | None = None
        self._partitions_due = 0.0  # monotonic time of the next production partition top-up
        self._prod_lock = asyncio.Lock()
        self.gatherer_conns: dict[str, psycopg.AsyncConnection | None] = {g.name: None for g in settings.gatherers}
        self.gatherer_ok: dict[str, bool] = {g.name: False for g in settings.gatherers}
        self.loops: list[SyncLoop] = []
        self.peers: dict[str, Peer] = {}
        self.market_sync: MarketSync | None = None
        self.api_ok: bool | None = None
        self.http: HealthServer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._rest: Any = None

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Ask the service to shut down gracefully (safe from a signal handler)."""
        self._stop.set()

    @property
    def http_url(self) -> str | None:
        return self.http.url if self.http else None

    async def wait_started(self) -> None:
        await self._started.wait()

    async def run(self) -> None:
        """Start, serve until stopped, shut down."""
        try:
            await self.start()
            await self._stop.wait()
        finally:
            await self.shutdown()

    async def start(self) -> None:
        """The initialization sequence (docs/deduplicator.md "Startup and shutdown")."""
        from kalshictl.db.connect import connect_async
        from kalshictl.dedup.cursors import load_cursors
        from kalshictl.health.server import HealthServer

        s = self.settings
        self.phase = "connecting production"
        self.production = await connect_async(s.production, autocommit=True)
        cur = await self.production.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,))
        locked = await cur.fetchone()
        if not (locked and locked[0]):
            raise KalshiCtlError(
                "another deduplicator holds this production database's lock", hint="run exactly one deduplicator"
            )
        self.http = HealthServer(s.http.host, s.http.port, self.health, self.metrics.registry, self.status)
        await self.http.start()
        log.info("deduplicator: production connected; /health on %s", self.http.url)
        self.disk.start(lambda: connect_async(s.production, autocommit=True))

        self.phase = "loading cursors"
        cursors = await load_cursors(self.production)
        log.info("deduplicator: %d sync cursors loaded", len(cursors))

        self.phase = "connecting gatherers"
        await asyncio.gather(*(self._connect_gatherer(g) for g in s.gatherers))

        self.phase = "testing exchange API"
        await self._test_api()

        self.phase = "waiting for a healthy gatherer"
        await self._wait_for_gatherer()

        self.phase = "starting sync"
        margin_us = int(s.sync.gap_margin_ms * 1000)
        self.peers = {g.name: Peer(g, margin_us) for g in s.gatherers}
        for g in s.gatherers:
            others = [p for name, p in self.peers.items() if name != g.name]
            for spec in EVENT_TABLES:
                loop = SyncLoop(
                    g, spec, s.production, s.sync, self.metrics, self._sync_stop, peers=others, on_merge=self.on_merge
                )
                self.loops.append(loop)
                self._tasks.append(asyncio.create_task(loop.run(), name=f"sync {loop.name}"))
        self._tasks.append(asyncio.create_task(self._monitor(), name="gatherer monitor"))
        if s.sync.market_sync_enabled and self._rest is not None:
            from kalshictl.dedup.market_sync import MarketSync

            self.market_sync = MarketSync(
                self._rest,
                lambda: connect_async(s.production, autocommit=True),
                s.sync.market_sync_interval_s,
                self.metrics,
                self._sync_stop,
            )
            self._tasks.append(asyncio.create_task(self.market_sync.run(), name="market sync"))
        self.phase = "running"
        self._started.set()
        log.info("deduplicator: healthy; %d sync loops running", len(self.loops))

    async def _connect_gatherer(self, g: GathererSource) -> bool:
        from kalshictl.db.connect import connect_async, ping_async
        from kalshictl.errors import DatabaseUnreachable

        conn = self.gatherer_conns.get(g.name)
        try:
            if conn is None or conn.closed:
                conn = await connect_async(g.database, autocommit=True)
                self.gatherer_conns[g.name] = conn
            await asyncio.wait_for(ping_async(conn), 5)
            ok = True
        except (DatabaseUnreachable, OSError, TimeoutError, Exception) as exc:
            if self.gatherer_ok.get(g.name):
                log.warning("gatherer %s unreachable: %s", g.name, str(exc).splitlines()[0] if str(exc) else exc)
            if conn is not None:
                try:
                    await conn.close()
                except Exception:
                    pass
            self.gatherer_conns[g.name] = None
            ok = False
        if ok and not self.gatherer_ok.get(g.name):
            log.info("gatherer %s connected", g.name)
        self.gatherer_ok[g.name] = ok
        self.metrics.gatherer_connected.labels(g.name).set(1 if ok else 0)
        return ok

    async def _test_api(self) -> None:
        if not self.settings.sync.market_sync_enabled:
            self.api_ok = None
            return
        from kalshictl.kalshi.rest import KalshiRest

        ex = self.settings.exchange
        key = ex.private_key.resolve() if ex.private_key else None
        self._rest = KalshiRest(
            ex.rest_url,
            requests_per_second=ex.requests_per_second,
            key_id=ex.api_key_id,
            private_key=key,
            timeout=ex.timeout_s,
            max_retries=3,
        )
        try:
            status = await self._rest.exchange_status()
            self.api_ok = True
            log.info("exchange API reachable: %s", status)
        except Exception as exc:  # market sync retries on its interval; time-series sync does not need the API
            self.api_ok = False
            log.warning("exchange API test failed (market sync will retry): %s", exc)

    async def _gatherer_healthy(self, g: GathererSource) -> bool:
        if g.health_url:
            import httpx

            try:
                async with httpx.AsyncClient(timeout=3) as client:
                    resp = await client.get(g.health_url)
                body = resp.json()  # any JSON: only an object saying "healthy" counts
                return resp.status_code == 200 and isinstance(body, dict) and body.get("status") == "healthy"
            except (httpx.HTTPError, ValueError):
                return False
        return await self._connect_gatherer(g)

    async def _wait_for_gatherer(self) -> None:
        deadline = time.monotonic() + self.settings.sync.wait_for_gatherer_s
        while True:
            results = await asyncio.gather(*(self._gatherer_healthy(g) for g in self.settings.gatherers))
            if any(results):
                return
            if time.monotonic() >= deadline or self._stop.is_set():
                raise KalshiCtlError(
                    f"no gatherer healthy after {self.settings.sync.wait_for_gatherer_s:g}s",
                    hint="check the gatherers' /health and that dedup_reader can reach their databases",
                )
            await WALL(1.0, self._stop)

    async def _ensure_production(self) -> None:
        """Reconnect the service's own production session (it holds the single-instance lock) if it broke."""
        from kalshictl.db.connect import connect_async

        if self.production is not None and not self.production.closed and not self.production.broken:
            return
        try:
            conn = await connect_async(self.settings.production, autocommit=True)
        except Exception as exc:
            log.warning("production unreachable: %s", str(exc).splitlines()[0] if str(exc) else exc)
            return
        cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,))
        locked = await cur.fetchone()
        if not (locked and locked[0]):
            log.error("another deduplicator took this production database's lock; stopping")
            await conn.close()
            self.request_stop()
            return
        self.production = conn

    async def _top_up_partitions(self) -> None:
        """Hourly: create production's upcoming range partitions (without it rows past the last one migrate made
        would land in the default partition), and forget lifecycle claims past their retention."""
        from kalshictl.db.migrate import ensure_partitions_async
        from kalshictl.dedup.lifecycle_merge import prune_copies

        if self.production is None or time.monotonic() < self._partitions_due:
            return
        try:
            async with self._prod_lock:
                created = await ensure_partitions_async(self.production)
                pruned = await prune_copies(self.production, now_us())
        except Exception as exc:
            log.warning("production partitions not topped up: %s", summarize(exc))
            self._partitions_due = time.monotonic() + 60.0
            return
        self._partitions_due = time.monotonic() + PARTITION_TOP_UP_S
        if created:
            log.info("production: created %d upcoming partitions", created)
        if pruned:
            log.info("production: forgot %d lifecycle claims past their retention", pruned)

    async def _monitor(self) -> None:
        while not self._sync_stop.is_set():
            await self._ensure_production()
            await self._top_up_partitions()
            await asyncio.gather(*(self._connect_gatherer(g) for g in self.settings.gatherers))
            await WALL(2.0, self._sync_stop)

    async def shutdown(self) -> None:
        """Graceful shutdown (docs/deduplicator.md): stop loops, wait for in-flight writes, close gatherers, close
        production."""
        log.info("deduplicator: shutting down")
        self.phase = "stopping"
        self._sync_stop.set()  # 1. stop sync loops (each finishes the merge in flight)
        if self._tasks:  # 2. wait for in-flight writes
            _done, pending = await asyncio.wait(self._tasks, timeout=self.settings.sync.shutdown_timeout_s)
            for task in pending:
                log.warning("deduplicator: %s did not stop in time; cancelling", task.get_name())
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        for loop in self.loops:  # 3. close gatherer connections
            await loop.close_gatherer()
        for peer in self.peers.values():
            await peer.close()
        for name, conn in list(self.gatherer_conns.items()):
            if conn is not None:
                await conn.close()
            self.gatherer_conns[name] = None
        await self.disk.stop()
        if self.http is not None:
            await self.http.stop()
        if self._rest is not None:
            await self._rest.close()
        for loop in self.loops:  # 4. close production
            await loop.close_production()
        if self.production is not None:
            await self.production.close()
        self.phase = "stopped"
        log.info("deduplicator: shutdown complete")

    # -- health and status -------------------------------------------------------------------------------------
    def max_lag_s(self) -> float | None:
        lags = [lp.lag_s for lp in self.loops if lp.lag_s is not None]
        return max(lags) if lags else None

    async def health(self) -> HealthReport:
        """The deduplicator's /health (docs/runbooks/reading-health.md)."""
        from kalshictl.db.connect import ping_async
        from kalshictl.health.thresholds import dedup_health

        connected, ping_ms = False, None
        if self.production is not None and not self.production.closed:
            async with self._prod_lock:
                try:
                    ping_ms = await asyncio.wait_for(ping_async(self.production), 2)
                    connected = True
                except Exception:
                    connected = False
        self.metrics.production_ping.set(float("nan") if ping_ms is None else ping_ms / 1000.0)
        report = dedup_health(
            production_connected=connected,
            production_ping_ms=ping_ms,
            gatherers=dict(self.gatherer_ok),
            max_lag_s=self.max_lag_s(),
            tables_syncing=sum(1 for lp in self.loops if lp.syncing),
        )
        report = self.disk.annotate(report)
        if self.phase != "running":
            report.status = "unhealthy"
        report.details["phase"] = self.phase
        return report

    async def status(self) -> dict[str, Any]:
        """Live per-loop state (served on /status)."""
        return {
            "phase": self.phase,
            "api_ok": self.api_ok,
            "loops": [
                {
                    "gatherer": lp.source.name,
                    "table": lp.spec.name,
                    "cursor": lp.cursor,
                    "syncing": lp.syncing,
                    "lag_s": lp.lag_s,
                    "batch_rows": lp.batch_rows,
                    "error": lp.last_error,
                }
                for lp in self.loops
            ],
            "market_sync": None
            if self.market_sync is None
            else {"passes": self.market_sync.passes, "last": self.market_sync.last_result,
                  "error": self.market_sync.last_error},
        }  # fmt: skip


def install_signal_handlers(service: Deduplicator) -> Callable[[], None]:
    """SIGTERM/SIGINT -> graceful stop. Returns a function that removes the handlers."""
    import signal

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, service.request_stop)

    def remove() -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)

    return remove
