"""Free space of a service's database filesystem as metrics and a /health detail (docs/retention.md).

:class:`DiskWatch` reads it every ``disk.interval_s`` of the one clock (kalshictl/clock.py) by the configured method
(:func:`kalshictl.db.disk.read_disk`), exports ``kalshi_db_disk_free_bytes``, ``kalshi_db_disk_size_bytes`` and
``kalshi_db_database_bytes``, and adds ``details.disk`` to /health: degraded below ``warning_free_percent`` free,
unhealthy below ``critical_free_percent`` (:func:`kalshictl.health.thresholds.disk_status`). The gatherer watches
its own database, the deduplicator production's.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

from prometheus_client import Gauge

from kalshictl.db.periodic import Periodic
from kalshictl.errors import summarize
from kalshictl.health.thresholds import disk_status, worst

if TYPE_CHECKING:
    import psycopg
    from prometheus_client import CollectorRegistry

    from kalshictl.config import DiskSettings
    from kalshictl.db.disk import DiskReading
    from kalshictl.db.periodic import Connect
    from kalshictl.health.thresholds import HealthReport, Status

log = logging.getLogger("kalshictl.health.disk")


class DiskWatch:
    """Reads the database's filesystem free space on a timer; :meth:`annotate` adds it to /health."""

    def __init__(self, settings: DiskSettings, registry: CollectorRegistry) -> None:
        self.settings = settings
        self.free = Gauge("kalshi_db_disk_free_bytes", "Free bytes on the database's filesystem", registry=registry)
        self.size = Gauge("kalshi_db_disk_size_bytes", "Size of the database's filesystem", registry=registry)
        self.database = Gauge("kalshi_db_database_bytes", "pg_database_size of the database", registry=registry)
        self.free.set(math.nan)  # unknown until read
        self.size.set(math.nan)
        self.reading: DiskReading | None = None
        self.error: str | None = None
        self._timer = Periodic("disk-watch", settings.interval_s, self.read, self._failed)

    def start(self, connect: Connect) -> None:
        """Read now and every ``interval_s``, on connections from ``connect`` (autocommit)."""
        self._timer.start(connect)

    async def stop(self) -> None:
        await self._timer.stop()

    def _failed(self, exc: BaseException) -> None:
        msg = summarize(exc)
        if msg != self.error:
            log.warning("disk: cannot read the database's free space: %s", msg)
        self.error = msg

    async def read(self, conn: psycopg.AsyncConnection) -> DiskReading | None:
        """One reading now on ``conn``; metrics updated; errors kept for /health (and logged once per change)."""
        from kalshictl.db.disk import read_disk

        try:
            reading = await read_disk(conn, path=self.settings.path, size_bytes=self.settings.size_bytes)
        except OSError as exc:  # statvfs of a wrong disk.path
            self._failed(exc)
            return None
        self.reading, self.error = reading, None
        self.free.set(math.nan if reading.free_bytes is None else reading.free_bytes)
        self.size.set(math.nan if reading.total_bytes is None else reading.total_bytes)
        if reading.database_bytes is not None:
            self.database.set(reading.database_bytes)
        return reading

    def status(self) -> Status:
        pct = self.reading.free_percent if self.reading is not None else None
        return disk_status(pct, self.settings.warning_free_percent, self.settings.critical_free_percent)

    def annotate(self, report: HealthReport) -> HealthReport:
        """Add ``details.disk`` (the other components stay as they are) and let its status worsen the report's."""
        d = self.settings
        status = self.status()
        reading = self.reading
        report.details["disk"] = {
            "status": status,
            **(reading.as_dict() if reading is not None else {"source": "not read yet"}),
            "warning_free_percent": d.warning_free_percent,
            "critical_free_percent": d.critical_free_percent,
            **({"error": self.error} if self.error else {}),
        }
        if status != "healthy" and reading is not None and reading.free_percent is not None:
            report.details.setdefault("reasons", []).append(
                f"database disk {reading.free_percent:.1f}% free (warning below {d.warning_free_percent:g}%,"
                f" critical below {d.critical_free_percent:g}%): docs/runbooks/disk-filling.md"
            )
        report.status = worst(report.status, status)
        return report
