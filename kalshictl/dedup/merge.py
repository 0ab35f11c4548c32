"""Merge a batch into production: COPY into a temp staging table, ``INSERT ... SELECT ... ON CONFLICT`` on the
exchange-fact key, and advance the sync cursor in the SAME transaction (docs/deduplicator.md, "The watermark").

The cursor update is guarded by the old cursor value and instance id, so a second deduplicator (or a cursor reset
that happened meanwhile) makes the transaction roll back instead of moving a cursor it did not own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kalshictl.db.rows import one_row_async
from kalshictl.dedup.lifecycle_merge import merge_lifecycle
from kalshictl.dedup.reader import Batch
from kalshictl.schema import REST_ANCHOR_SPACING_US, Merge, Table

if TYPE_CHECKING:
    import psycopg


class CursorConflict(Exception):
    """The production cursor moved under us (another deduplicator, or a reset); the merge was rolled back."""


@dataclass
class MergeResult:
    """What one merge did."""

    staged: int  # rows offered
    merged: int  # rows inserted (new exchange events)
    max_clock: int | None  # newest clock value (us) in the batch
    min_clock: int | None = None  # oldest clock value (us) in the batch

    @property
    def duplicates(self) -> int:
        return self.staged - self.merged


def stage_name(spec: Table) -> str:
    return f"_stage_{spec.name}"


def first_copy_sql(spec: Table, source: str) -> str:
    """The first gatherer's copy of a keyed row is kept."""
    cols = ", ".join(spec.production_columns)
    return (
        f"INSERT INTO {spec.name} ({cols}) SELECT {cols} FROM {source} ON CONFLICT ({', '.join(spec.key)}) DO NOTHING"
    )


def upsert_window_sql(spec: Table, source: str) -> str:
    """A gap window is upserted each time the gatherer's row changes (open, close, recovery: each bumps its txid, and
    the watermark reads the newest version); a closed window never reopens."""
    cols = ", ".join(spec.production_columns)
    return (
        f"INSERT INTO {spec.name} ({cols}) SELECT {cols} FROM {source} ON CONFLICT ({', '.join(spec.key)})"
        f" DO UPDATE SET to_ts = COALESCE(EXCLUDED.to_ts, {spec.name}.to_ts), recovery = EXCLUDED.recovery,"
        " tickers = EXCLUDED.tickers"
    )


def trade_id_sql(spec: Table, source: str) -> str:
    """Trades are identified by ``trade_id`` alone: a REST-backfilled copy may carry a coarser ``created_time`` than
    the WebSocket's ``ts_ms``, so a trade already stored under any time is not stored again, and within a batch the
    WebSocket copy is preferred."""
    cols = spec.production_columns
    sel = ", ".join(f"s.{c}" for c in cols)
    return (
        f"INSERT INTO {spec.name} ({', '.join(cols)}) SELECT DISTINCT ON (s.trade_id) {sel} FROM {source} s"
        f" WHERE NOT EXISTS (SELECT 1 FROM {spec.name} p WHERE p.trade_id = s.trade_id)"
        " ORDER BY s.trade_id, (s.source = 'rest'), s.exchange_ts ON CONFLICT DO NOTHING"
    )


def updates_and_anchors_sql(spec: Table, source: str) -> str:
    """Exchange updates: the first copy of each key. REST re-anchors (``source = 'rest'``): a row is stored only when
    no REST row of its market is stored within ``REST_ANCHOR_SPACING_US`` of it, and no earlier one of the batch is
    within that span before it: at most one per market per span over all gatherers (merges of the table run one at
    a time, so each sees the others' rows)."""
    cols = spec.production_columns
    sel = ", ".join(f"s.{c}" for c in cols)
    span = int(REST_ANCHOR_SPACING_US)
    near = "{a}.ticker = s.ticker AND {a}.source = 'rest' AND {a}.exchange_ts > s.exchange_ts - {span}"
    return (
        f"INSERT INTO {spec.name} ({', '.join(cols)}) SELECT {sel} FROM {source} s"
        " WHERE s.source <> 'rest' OR ("
        f"NOT EXISTS (SELECT 1 FROM {spec.name} p WHERE {near.format(a='p', span=span)}"
        f" AND p.exchange_ts < s.exchange_ts + {span})"
        f" AND NOT EXISTS (SELECT 1 FROM {source} e WHERE {near.format(a='e', span=span)}"
        " AND e.exchange_ts < s.exchange_ts))"
        f" ON CONFLICT ({', '.join(spec.key)}) DO NOTHING"
    )


# The INSERT of each keyed merge policy (kalshictl/schema.py ``Merge``); claimed copies merge in lifecycle_merge.py.
INSERT_SQL: dict[Merge, Callable[[Table, str], str]] = {
    Merge.FIRST_COPY: first_copy_sql,
    Merge.UPSERT_WINDOW: upsert_window_sql,
    Merge.TRADE_ID: trade_id_sql,
    Merge.UPDATES_AND_ANCHORS: updates_and_anchors_sql,
}


def insert_sql(spec: Table, source: str) -> str:
    """``INSERT INTO table SELECT ... FROM source ...`` for a table, by its merge policy."""
    return INSERT_SQL[spec.merge](spec, source)


async def insert_merge(pconn: psycopg.AsyncConnection, spec: Table, stage: str, gatherer: str) -> int:
    cur = await pconn.execute(insert_sql(spec, stage))
    return max(cur.rowcount, 0)


async def claimed_copies_merge(pconn: psycopg.AsyncConnection, spec: Table, stage: str, gatherer: str) -> int:
    return await merge_lifecycle(pconn, stage, spec.production_columns, gatherer)


# The merge of a table's staged rows (returns the rows inserted), by its merge policy.
MERGERS: dict[Merge, Callable[[psycopg.AsyncConnection, Table, str, str], Awaitable[int]]] = {
    Merge.FIRST_COPY: insert_merge,
    Merge.UPSERT_WINDOW: insert_merge,
    Merge.TRADE_ID: insert_merge,
    Merge.UPDATES_AND_ANCHORS: insert_merge,
    Merge.CLAIMED_COPIES: claimed_copies_merge,
}


def merge_lock_sql(spec: Table) -> str | None:
    """Tables whose identity is not a unique key (``Merge.serialized``: trades by trade_id, lifecycle by claimed
    copies, REST ticker re-anchors by their spacing) are merged one gatherer at a time: the NOT EXISTS check must see
    the other gatherers' committed rows, so concurrent merges of the same table would each miss the other's copy.
    Transaction-scoped advisory lock per table."""
    if spec.merge.serialized:
        return f"SELECT pg_advisory_xact_lock({MERGE_LOCK_BASE}, hashtext('{spec.name}'))"
    return None


MERGE_LOCK_BASE = 0x6B61  # "ka": advisory-lock namespace of the merge


async def ensure_stage(pconn: psycopg.AsyncConnection, spec: Table) -> None:
    """Create this session's staging table (rows vanish at commit)."""
    await pconn.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {stage_name(spec)} (LIKE {spec.name} INCLUDING DEFAULTS)"
        " ON COMMIT DELETE ROWS"
    )


async def copy_into_stage(
    pconn: psycopg.AsyncConnection, spec: Table, batch: Batch, extra_rows: Sequence[Sequence[Any]] = ()
) -> None:
    """COPY the batch's raw rows (in the format they were read in) and ``extra_rows`` into the staging table."""
    stage = stage_name(spec)
    cols = ", ".join(spec.production_columns)
    if batch.chunks:
        async with pconn.cursor().copy(f"COPY {stage} ({cols}) FROM STDIN (FORMAT {spec.copy_format.value})") as copy:
            for chunk in batch.chunks:
                await copy.write(chunk)
    if extra_rows:
        async with pconn.cursor().copy(f"COPY {stage} ({cols}) FROM STDIN") as copy:
            for row in extra_rows:
                await copy.write_row(row)


async def merge_batch(
    pconn: psycopg.AsyncConnection,
    spec: Table,
    *,
    gatherer: str,
    instance_id: str,
    batch: Batch,
    extra_rows: Sequence[Sequence[Any]] = (),
) -> MergeResult:
    """Merge ``batch`` (plus ``extra_rows`` in production column order) and move the cursor to ``batch.upper``.

    ``pconn`` must be in autocommit mode; everything here is one transaction.
    """
    async with pconn.transaction():
        await ensure_stage(pconn, spec)
        stage = stage_name(spec)
        staged = 0
        await copy_into_stage(pconn, spec, batch, extra_rows)
        staged = batch.rows + len(extra_rows)
        merged = 0
        max_clock = min_clock = None
        if staged:
            lock = merge_lock_sql(spec)
            if lock is not None:
                await pconn.execute(lock)
            merged = await MERGERS[spec.merge](pconn, spec, stage, gatherer)
            cur = await pconn.execute(f"SELECT max({spec.clock}), min({spec.clock}) FROM {stage}")
            max_clock, min_clock = await one_row_async(cur)
        cur = await pconn.execute(
            "UPDATE sync_cursors SET xmin_cursor = %s, rows_read = rows_read + %s, rows_merged = rows_merged + %s,"
            " last_received_at = GREATEST(last_received_at, %s), updated_at = now()"
            " WHERE gatherer = %s AND table_name = %s AND xmin_cursor = %s AND instance_id = %s",
            (batch.upper, staged, merged, max_clock, gatherer, spec.name, batch.cursor, instance_id),
        )
        if cur.rowcount != 1:
            raise CursorConflict(f"{gatherer}/{spec.name}: cursor is no longer {batch.cursor}; rolled back")
    return MergeResult(staged, merged, max_clock, min_clock)
