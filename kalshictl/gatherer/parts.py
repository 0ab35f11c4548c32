"""The parts of one gatherer, held in one place for the objects that read them (status, maintenance, shutdown).

The first parts are built with the :class:`~kalshictl.gatherer.service.Gatherer`; the others by the start-up phase
that needs them (docs/gatherer.md "Start-up"), and are None before it ran: a /health request during start-up sees
what exists so far.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kalshictl.config import GathererSettings
    from kalshictl.gatherer.backfill import TradeBackfill
    from kalshictl.gatherer.connections import ConnectionPool
    from kalshictl.gatherer.database import LocalDatabase
    from kalshictl.gatherer.gaps import GapLog
    from kalshictl.gatherer.metrics import GathererMetrics
    from kalshictl.gatherer.placement import Placement
    from kalshictl.gatherer.poller import SnapshotPoller
    from kalshictl.gatherer.registry import MarketRegistry
    from kalshictl.gatherer.router import Router
    from kalshictl.gatherer.shards import Shards
    from kalshictl.gatherer.storage import StorageMonitor
    from kalshictl.gatherer.writers import WriterSet
    from kalshictl.kalshi.rest import KalshiRest


@dataclass(eq=False)
class Parts:
    """Every collaborator of one gatherer (see module docs)."""

    settings: GathererSettings
    metrics: GathererMetrics
    registry: MarketRegistry
    writers: WriterSet
    gaplog: GapLog
    router: Router
    storage: StorageMonitor
    database: LocalDatabase
    rest: KalshiRest | None = None  # phase 2
    backfill: TradeBackfill | None = None  # phase 2
    manager: ConnectionPool | None = None  # phase 4
    shards: Shards | None = None  # phase 4
    placement: Placement | None = None  # phase 4
    poller: SnapshotPoller | None = None  # phase 5

    @property
    def name(self) -> str:
        return self.settings.name

    def committed_through_us(self, cap: int) -> int:
        """The coverage heartbeat: a time (at most ``cap``) before which everything received is committed and no
        loss can still be undetected — over the table writers, the gap log (and the router's verification floor it
        holds) and the lifecycle windows the backfill has not re-anchored yet."""
        through = min(self.writers.committed_through_us(cap), self.gaplog.committed_through_us(cap))
        if self.backfill is not None:
            through = min(through, self.backfill.unanchored_since(cap))
        return through
