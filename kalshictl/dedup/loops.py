"""One independent sync loop per gatherer x table.

Each loop owns its gatherer connection and its production connection, so a gatherer (or its database) that goes
away, comes back, or returns with a backlog only affects its own loops: errors close the loop's connections and it
reconnects with jittered exponential backoff. Batches adapt to backlog: a capped batch doubles the next batch size
(up to ``max_batch_rows``) and loops again at once; a batch that reached the watermark halves it (down to
``min_batch_rows``) and the loop sleeps ``interval_ms``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from kalshictl.backoff import WALL, Backoff, Jitter
from kalshictl.dedup.cursors import reconcile
from kalshictl.dedup.gaps import Peer, judge
from kalshictl.dedup.merge import CursorConflict, MergeResult, merge_batch
from kalshictl.dedup.reader import InstanceChanged, read_batch
from kalshictl.errors import summarize
from kalshictl.schema import Table
from kalshictl.units import now_us

if TYPE_CHECKING:
    import psycopg

    from kalshictl.config import DatabaseSettings, GathererSource, SyncSettings
    from kalshictl.dedup.metrics import DedupMetrics

log = logging.getLogger("kalshictl.dedup.loops")

OnMerge = Callable[[str, str, MergeResult, float], None]  # gatherer, table, result, when (one-clock seconds)


class SyncLoop:
    """Sync one gatherer table into production until stopped."""

    def __init__(
        self,
        source: GathererSource,
        spec: Table,
        production: DatabaseSettings,
        sync: SyncSettings,
        metrics: DedupMetrics,
        stop: asyncio.Event,
        peers: Sequence[Peer] = (),
        on_merge: OnMerge | None = None,
    ) -> None:
        self.source = source
        self.spec = spec
        self.production = production
        self.sync = sync
        self.metrics = metrics
        self.stop = stop
        self.peers = peers
        self.on_merge = on_merge
        self.gconn: psycopg.AsyncConnection | None = None
        self.pconn: psycopg.AsyncConnection | None = None
        self.instance_id: str | None = None
        self.cursor: int = 0
        self.batch_rows = sync.min_batch_rows
        self.syncing = False  # connected and completed a pass without error
        self.lag_s: float | None = None  # None while the gatherer cannot be read
        self.last_error: str | None = None
        self._labels = (source.name, spec.name)
        self.ledger = True  # record the merge watermark in the gatherer for its retention (docs/retention.md)

    @property
    def name(self) -> str:
        return f"{self.source.name}/{self.spec.name}"

    async def _connect(self) -> None:
        from kalshictl.db.connect import connect_async

        if self.pconn is None or self.pconn.closed:
            self.pconn = await connect_async(self.production, autocommit=True)
        if self.gconn is None or self.gconn.closed:
            self.gconn = await connect_async(self.source.database, autocommit=True)
            cur = await self.gconn.execute("SELECT instance_id::text FROM gatherer_meta")
            meta = await cur.fetchone()
            if meta is None:
                raise InstanceChanged(f"{self.source.name}: gatherer_meta is empty (run `kalshictl init-db` there)")
            self.instance_id = meta[0]
            cursor = await reconcile(self.pconn, self.source.name, self.spec.name, self.instance_id)
            self.cursor = cursor.xmin
            self.ledger = True  # a gatherer migrated meanwhile gets its ledger from the next merge on
            log.info("%s: connected (instance %s, cursor xid %d)", self.name, self.instance_id, self.cursor)

    async def close_gatherer(self) -> None:
        """Close this loop's gatherer connection."""
        if self.gconn is not None:
            try:
                await self.gconn.close()
            except Exception:
                pass
            self.gconn = None

    async def close_production(self) -> None:
        """Close this loop's production connection."""
        if self.pconn is not None:
            try:
                await self.pconn.close()
            except Exception:
                pass
            self.pconn = None

    async def step(self) -> bool:
        """One read + merge. Returns True if the batch was capped (more is waiting)."""
        await self._connect()
        assert self.gconn is not None and self.pconn is not None and self.instance_id is not None
        margin_us = int(self.sync.gap_margin_ms * 1000)
        batch = await read_batch(
            self.gconn,
            self.spec,
            self.cursor,
            self.batch_rows,
            gatherer=self.source.name,
            instance_id=self.instance_id,
            gap_margin_us=margin_us,
        )
        extra: list[tuple[Any, ...]] = []
        if self.spec.gap_screened and batch.suspects:
            verdict = await judge(batch.suspects, self.peers)
            extra = [(*row, self.source.name) for row in verdict.accepted]
            for decision in ("witnessed", "unwitnessed", "rejected"):
                if getattr(verdict, decision):
                    self.metrics.gap_trust.labels(self.source.name, decision).inc(getattr(verdict, decision))
        if not batch.empty:
            result = await merge_batch(
                self.pconn,
                self.spec,
                gatherer=self.source.name,
                instance_id=self.instance_id,
                batch=batch,
                extra_rows=extra,
            )
            self.cursor = batch.upper
            await self._record_merged(batch.upper)
            self.metrics.rows_read.labels(*self._labels).inc(result.staged)
            self.metrics.rows_merged.labels(*self._labels).inc(result.merged)
            self.metrics.duplicates.labels(*self._labels).inc(result.duplicates)
            self.metrics.batches.labels(*self._labels).inc()
            if self.on_merge is not None:
                self.on_merge(self.source.name, self.spec.name, result, now_us() / 1e6)
        if batch.backlog_oldest is None:
            self.lag_s = 0.0
        else:
            self.lag_s = max(0.0, (now_us() - batch.backlog_oldest) / 1e6)
        self.metrics.lag.labels(*self._labels).set(self.lag_s)
        if batch.full:
            self.batch_rows = min(self.batch_rows * 2, self.sync.max_batch_rows)
        else:
            self.batch_rows = max(self.batch_rows // 2, self.sync.min_batch_rows)
        return batch.full

    async def _record_merged(self, upper: int) -> None:
        """After the merge committed in production: tell the gatherer's retention that every row of this table below
        ``upper`` is merged. A gatherer database without the ledger (migrations/gatherer/019_retention.sql), or a
        table retention does not manage, turns this off for the loop; it never stops the sync."""
        import psycopg

        from kalshictl.db.retention import record_merged

        if not self.ledger:
            return
        assert self.gconn is not None and self.instance_id is not None
        try:
            self.ledger = await record_merged(self.gconn, self.spec.name, self.instance_id, upper)
        except (psycopg.errors.UndefinedFunction, psycopg.errors.InsufficientPrivilege) as exc:
            self.ledger = False
            log.warning(
                "%s: cannot record the merge watermark in the gatherer (%s): its retention will keep every"
                " partition; run `kalshictl migrate` and `init-db` on that gatherer",
                self.name,
                summarize(exc),
            )

    async def run(self) -> None:
        """Loop until ``stop`` is set; the merge in flight when it is set completes first."""
        import psycopg

        from kalshictl.errors import DatabaseUnreachable

        backoff = Backoff(self.sync.reconnect_min_s, self.sync.reconnect_max_s, Jitter.SPREAD)
        delays = backoff.delays()
        while not self.stop.is_set():
            try:
                more = await self.step()
                self.syncing = True
                self.last_error = None
                delays = backoff.delays()
                if not more:
                    await WALL(self.sync.interval_ms / 1000, self.stop)
            except (psycopg.Error, DatabaseUnreachable, OSError, InstanceChanged, CursorConflict) as exc:
                self.syncing = False
                self.lag_s = None
                self.metrics.errors.labels(*self._labels).inc()
                msg = summarize(exc)
                delay = next(delays)
                if msg != self.last_error:
                    log.warning("%s: %s; retrying in %.1fs", self.name, msg, delay)
                self.last_error = msg
                await self.close_gatherer()
                await self.close_production()
                await WALL(delay, self.stop)
        self.syncing = False
