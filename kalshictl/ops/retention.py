"""``kalshictl retention run``: one retention pass over the database a config names (docs/retention.md).

For a gatherer config it is the same pass ``gather run`` makes on its timer (:func:`kalshictl.db.retention.apply`),
run once as the gatherer role, on the one clock (kalshictl/clock.py). The partitions it drops, and every partition it
keeps because not every row is merged, are returned for the command to print.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from kalshictl import clock
from kalshictl.errors import ConfigError

if TYPE_CHECKING:
    from kalshictl.config import GathererSettings, Settings
    from kalshictl.db.retention import PartitionVerdict, RetentionResult


def run(
    settings: Settings,
    *,
    keep_days: float | None = None,
    dry_run: bool = False,
    on_partition: Callable[[PartitionVerdict], None] | None = None,
) -> RetentionResult:
    """One pass over the database of the config's ``gatherer`` section (``keep_days`` defaults to the config's)."""
    if settings.gatherer is None:
        where = f" in {settings.source_path}" if settings.source_path else ""
        raise ConfigError(f"gatherer: section missing{where} (retention run needs a gatherer config)")
    if keep_days is not None and keep_days < 0:
        raise ConfigError(f"--keep-days: must be >= 0, got {keep_days:g}")
    return asyncio.run(run_gatherer(settings.gatherer, keep_days=keep_days, dry_run=dry_run, on_partition=on_partition))


async def run_gatherer(
    gs: GathererSettings,
    *,
    keep_days: float | None = None,
    dry_run: bool = False,
    on_partition: Callable[[PartitionVerdict], None] | None = None,
) -> RetentionResult:
    """The gatherer's retention pass as its own role (autocommit: one transaction per dropped partition)."""
    from kalshictl.db.connect import connect_async
    from kalshictl.db.retention import apply

    keep = gs.retention.keep_days if keep_days is None else keep_days
    conn = await connect_async(gs.database, autocommit=True)
    try:
        return await apply(conn, now_us=clock.now_us(), keep_days=keep, dry_run=dry_run, on_partition=on_partition)
    finally:
        await conn.close()
