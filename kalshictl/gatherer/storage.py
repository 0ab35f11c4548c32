"""The gatherer's storage on a timer: retention of merged partitions and the free space of its database's disk.

Two timers inside ``gather run`` (docs/retention.md): every ``retention.interval_s`` the same retention pass as
``kalshictl retention run`` (:func:`kalshictl.db.retention.apply`), and every ``disk.interval_s`` the database's
filesystem free space (:class:`kalshictl.health.disk.DiskWatch`). Both sleep on the one clock (kalshictl/clock.py),
so a sped-up clock runs them faster. Their results become metrics, log lines and two /health details (``disk`` and
``retention``) whose statuses count in the overall status.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Gauge

from kalshictl import clock
from kalshictl.db.periodic import Periodic
from kalshictl.errors import summarize
from kalshictl.health.disk import DiskWatch
from kalshictl.health.thresholds import retention_status, worst

if TYPE_CHECKING:
    import psycopg
    from prometheus_client import CollectorRegistry

    from kalshictl.config import GathererSettings
    from kalshictl.db.retention import RetentionResult
    from kalshictl.health.thresholds import HealthReport

log = logging.getLogger("kalshictl.gatherer.storage")


class StorageMetrics:
    """Retention metrics, registered in the gatherer's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.runs = Counter("kalshi_retention_runs", "Retention passes by outcome", ["outcome"], registry=r)
        self.dropped = Counter("kalshi_retention_partitions_dropped", "Partitions dropped", ["table"], registry=r)
        self.dropped_bytes = Counter(
            "kalshi_retention_dropped_bytes", "Bytes freed by dropped partitions", ["table"], registry=r
        )
        self.held = Gauge(
            "kalshi_retention_partitions_held",
            "Partitions older than keep_days kept because not every row is merged",
            ["table", "reason"],
            registry=r,
        )
        self.held_bytes = Gauge("kalshi_retention_held_bytes", "Bytes of the partitions held back", registry=r)
        self.oldest_held_age = Gauge(
            "kalshi_retention_oldest_held_age_seconds",
            "Age of the oldest held-back partition's newest possible row (0: none held)",
            registry=r,
        )
        self.keep_days = Gauge("kalshi_retention_keep_days", "The configured keep window in days", registry=r)
        self.last_success = Gauge(
            "kalshi_retention_last_success_timestamp_seconds", "Clock time of the last successful pass", registry=r
        )


class StorageMonitor:
    """The timer task; :meth:`annotate` adds its findings to the gatherer's /health."""

    def __init__(self, settings: GathererSettings, registry: CollectorRegistry) -> None:
        self.settings = settings
        self.metrics = StorageMetrics(registry)
        self.metrics.keep_days.set(settings.retention.keep_days)
        self.disk = DiskWatch(settings.disk, registry)
        self.last_run: RetentionResult | None = None
        self.retention_error: str | None = None
        self._timer = Periodic("retention-timer", settings.retention.interval_s, self.run_retention, self._failed)

    def start(self) -> None:
        self.disk.start(self._own_connection)
        if self.settings.retention.enabled:
            self._timer.start(self._own_connection)

    async def stop(self) -> None:
        """Stop the timer: a pass in flight gets 2 s, then is cancelled (a drop interrupted rolls back whole)."""
        await asyncio.gather(self.disk.stop(), self._timer.stop())

    async def _own_connection(self) -> psycopg.AsyncConnection:
        from kalshictl.db.connect import connect_async

        return await connect_async(self.settings.database, autocommit=True)

    async def run_retention(self, conn: psycopg.AsyncConnection) -> RetentionResult:
        """One retention pass on ``conn`` at the one clock's now; metrics and logs from its result."""
        from kalshictl.db.retention import apply

        result = await apply(conn, now_us=clock.now_us(), keep_days=self.settings.retention.keep_days)
        self.last_run, self.retention_error = result, None
        self.record(result)
        return result

    def _failed(self, exc: Exception) -> None:
        self.retention_error = summarize(exc)
        self.metrics.runs.labels(outcome="error").inc()
        log.warning("retention: pass failed: %s", self.retention_error)

    def record(self, result: RetentionResult) -> None:
        """Metrics and log lines of one pass."""
        m = self.metrics
        m.runs.labels(outcome="ok").inc()
        m.last_success.set(result.now_us / 1e6)
        for p in result.dropped:
            m.dropped.labels(table=p.table).inc()
            m.dropped_bytes.labels(table=p.table).inc(p.bytes)
            log.info(
                "retention: dropped %s (%s, %d..%d µs, ~%d rows, %d bytes)",
                p.partition,
                p.table,
                p.range_from,
                p.range_to,
                p.approx_rows,
                p.bytes,
            )
        m.held.clear()
        counts: dict[tuple[str, str], int] = {}
        for p in result.held:
            key = (p.table, p.outcome or p.verdict)
            counts[key] = counts.get(key, 0) + 1
        for (table, reason), n in counts.items():
            m.held.labels(table=table, reason=reason).set(n)
        m.held_bytes.set(sum(p.bytes for p in result.held))
        age = result.oldest_held_age_s()
        m.oldest_held_age.set(age or 0.0)
        if result.held:
            oldest = min(result.held, key=lambda p: p.range_to)
            log.warning(
                "retention: %d partition(s) older than %g days kept because not every row is merged"
                " (oldest %s, %.1f days old: %s)",
                len(result.held),
                result.keep_days,
                oldest.partition,
                (age or 0.0) / 86_400,
                oldest.outcome or oldest.verdict,
            )

    def annotate(self, report: HealthReport) -> HealthReport:
        """Add ``details.disk`` and ``details.retention`` to a /health report (the other components stay as they
        are) and let their statuses worsen the report's."""
        report = self.disk.annotate(report)
        keep = self.settings.retention.keep_days
        age = self.last_run.oldest_held_age_s() if self.last_run is not None else None
        ret = retention_status(age, keep) if self.settings.retention.enabled else "healthy"
        retention: dict[str, Any] = {"status": ret, "enabled": self.settings.retention.enabled, "keep_days": keep}
        if self.last_run is not None:
            retention.update(
                held=len(self.last_run.held),
                oldest_held_age_days=None if age is None else round(age / 86_400, 3),
                last_run_us=self.last_run.now_us,
            )
        if self.retention_error:
            retention["error"] = self.retention_error
        report.details["retention"] = retention
        if ret != "healthy":
            report.details.setdefault("reasons", []).append(
                f"a partition not yet merged is {(age or 0) / 86_400:.1f} days old (keep_days {keep:g}):"
                " is the deduplicator reading this gatherer?"
            )
        report.status = worst(report.status, ret)
        return report
