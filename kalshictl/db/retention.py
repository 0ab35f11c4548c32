"""Gatherer retention against one database: the merge ledger and the narrow, audited drop path.

The SQL lives in migrations/gatherer/019_retention.sql and the design in docs/retention.md. In short: the
deduplicator records its sync cursor (an xid8 watermark) for each table in the gatherer's ``kalshi_merge_ledger``
after the merge committed in production (:func:`record_merged`); a partition whose range ended before the cutoff is
dropped (:func:`apply`) only if no row in it has ``txid`` at or above that watermark, by a SECURITY DEFINER function
owned by the schema owner that re-checks under a lock and logs each drop in ``kalshi_retention_log``. The service
roles themselves cannot drop or delete anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from kalshictl.db.rows import one_row_async

if TYPE_CHECKING:
    import psycopg

US_PER_DAY = 86_400_000_000
DROP = "drop"
HELD_UNMERGED = "held_unmerged"
HELD_NO_LEDGER = "held_no_ledger"


@dataclass
class PartitionVerdict:
    """One candidate partition (its range ended at or before the cutoff) and what retention did or would do."""

    table: str
    partition: str
    range_from: int  # µs, inclusive
    range_to: int  # µs, exclusive
    approx_rows: int
    bytes: int
    verdict: str  # drop | held_unmerged | held_no_ledger
    outcome: str | None = None  # dropped | held_unmerged | held_no_ledger | locked | not_a_candidate | None (dry run)

    @property
    def held(self) -> bool:
        return (self.outcome or self.verdict) in (HELD_UNMERGED, HELD_NO_LEDGER, "locked")


@dataclass
class RetentionResult:
    """One retention pass over one gatherer database."""

    now_us: int
    keep_days: float
    cutoff_us: int
    dry_run: bool
    partitions: list[PartitionVerdict] = field(default_factory=list)

    @property
    def dropped(self) -> list[PartitionVerdict]:
        return [p for p in self.partitions if p.outcome == "dropped"]

    @property
    def would_drop(self) -> list[PartitionVerdict]:
        return [p for p in self.partitions if p.verdict == DROP and p.outcome is None]

    @property
    def held(self) -> list[PartitionVerdict]:
        return [p for p in self.partitions if p.held]

    def oldest_held_age_s(self) -> float | None:
        """Age of the oldest held partition's newest possible row (now - range_to), in seconds; None if none."""
        held = self.held
        return None if not held else max(0.0, (self.now_us - min(p.range_to for p in held)) / 1e6)

    def as_dict(self) -> dict[str, Any]:
        return {
            "now_us": self.now_us,
            "keep_days": self.keep_days,
            "cutoff_us": self.cutoff_us,
            "dry_run": self.dry_run,
            "dropped": len(self.dropped),
            "dropped_bytes": sum(p.bytes for p in self.dropped),
            "would_drop": len(self.would_drop),
            "would_drop_bytes": sum(p.bytes for p in self.would_drop),
            "held": len(self.held),
            "held_bytes": sum(p.bytes for p in self.held),
            "oldest_held_age_s": self.oldest_held_age_s(),
            "partitions": [asdict(p) for p in self.partitions],
        }


def cutoff_for(now_us: int, keep_days: float) -> int:
    """Partitions whose range ends at or before this instant are older than ``keep_days``."""
    if keep_days < 0:
        raise ValueError(f"keep_days must be >= 0, got {keep_days}")
    return now_us - int(keep_days * US_PER_DAY)


async def candidates(conn: psycopg.AsyncConnection, cutoff_us: int) -> list[PartitionVerdict]:
    """Every partition whose range ended at or before ``cutoff_us``, with its verdict (read-only)."""
    cur = await conn.execute(
        "SELECT table_name, partition_name, range_from, range_to, approx_rows, bytes, verdict"
        " FROM kalshi_retention_candidates(%s)",
        (cutoff_us,),
    )
    return [PartitionVerdict(*row) for row in await cur.fetchall()]


async def apply(
    conn: psycopg.AsyncConnection,
    *,
    now_us: int,
    keep_days: float,
    dry_run: bool = False,
    on_partition: Callable[[PartitionVerdict], None] | None = None,
) -> RetentionResult:
    """One retention pass: list the candidates and (unless ``dry_run``) drop each merged one, one transaction per
    partition so a lock is held only for that partition. ``conn`` must be in autocommit mode."""
    cutoff = cutoff_for(now_us, keep_days)
    result = RetentionResult(now_us, keep_days, cutoff, dry_run, await candidates(conn, cutoff))
    for part in result.partitions:
        if not dry_run:
            if part.verdict == DROP:
                cur = await conn.execute(
                    "SELECT kalshi_drop_merged_partition(%s, %s, %s)", (part.table, part.partition, cutoff)
                )
                part.outcome = (await one_row_async(cur))[0]
            else:
                part.outcome = part.verdict
        if on_partition is not None:
            on_partition(part)
    return result


async def record_merged(conn: psycopg.AsyncConnection, table: str, instance_id: str, merged_below: int) -> bool:
    """The deduplicator's side: record that every row of ``table`` with txid below ``merged_below`` is merged into
    production (call only after that merge committed). False for a table retention does not manage."""
    cur = await conn.execute(
        "SELECT kalshi_record_merged(%s, %s::uuid, %s::text::xid8)", (table, instance_id, str(merged_below))
    )
    return bool((await one_row_async(cur))[0])


async def ledger(conn: psycopg.AsyncConnection) -> list[dict[str, Any]]:
    """The merge ledger as rows (for status and reports)."""
    cur = await conn.execute(
        "SELECT table_name, instance_id::text, merged_below::text, recorded_by, updated_at"
        " FROM kalshi_merge_ledger ORDER BY table_name"
    )
    cols = ("table", "instance_id", "merged_below", "recorded_by", "updated_at")
    return [dict(zip(cols, row, strict=True)) for row in await cur.fetchall()]
