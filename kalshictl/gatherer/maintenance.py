"""The gatherer's once-a-second housekeeping, from the database phase of start-up until shutdown.

Every second: ping the database (/health's component), advance the coverage heartbeat (once running), release
snapshots that found their anchor, refresh the gauges. Less often: ``kalshi_ensure_partitions()`` hourly, seq probes
every ``seq_probe_interval_s``, stale snapshot requests every 5 s, the registry refresh every ``registry_refresh_s``
(docs/gatherer.md). Intervals are wall time, like the sockets and the database they pace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from kalshictl.gatherer.parts import Parts
from kalshictl.gatherer.status import update_metrics
from kalshictl.units import now_us

log = logging.getLogger("kalshictl.gatherer")

TICK_S = 1.0
PARTITIONS_EVERY_S = 3600.0
STALE_SNAPSHOTS_EVERY_S = 5.0


class Maintenance:
    """Runs :meth:`run` as one task (see module docs); ``running()`` says whether start-up has completed."""

    def __init__(self, parts: Parts, running: Callable[[], bool]) -> None:
        self.parts = parts
        self.running = running
        start = time.monotonic()
        self._last_partitions = start
        self._last_snap_retry = start
        self._last_probe = start
        self._last_refresh = start

    async def write_heartbeat(self, until_us: int | None = None) -> None:
        """Advance the coverage heartbeat to what is committed (capped at ``until_us``)."""
        now = now_us()
        through = self.parts.committed_through_us(now if until_us is None else min(now, until_us))
        await self.parts.database.write_heartbeat(through)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            await self.tick()

    async def tick(self) -> None:
        p = self.parts
        w = p.settings.websocket
        with contextlib.suppress(Exception):
            await p.database.ping()
        if self.running():
            with contextlib.suppress(Exception):
                await self.write_heartbeat()
        now = time.monotonic()
        if now - self._last_partitions > PARTITIONS_EVERY_S:
            with contextlib.suppress(Exception):
                if await p.database.ensure_partitions():
                    self._last_partitions = now
        p.router.flush_pending_snapshots(now_us())
        if p.manager is not None and now - self._last_probe >= w.seq_probe_interval_s:
            self._last_probe = now
            # probes never eat into the budget that resyncs need
            p.router.probe_all(min_tokens=w.command_burst / 2)
        if now - self._last_snap_retry > STALE_SNAPSHOTS_EVERY_S:
            self._last_snap_retry = now
            p.router.retry_stale_snapshots()
        if self.running() and p.placement is not None and now - self._last_refresh >= w.registry_refresh_s:
            self._last_refresh = now
            try:
                await p.placement.refresh_registry()
            except Exception as exc:
                log.warning("%s: registry refresh failed: %s", p.name, exc)
        update_metrics(p)
