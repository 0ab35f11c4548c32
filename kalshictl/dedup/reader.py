"""Read a gatherer table past the cursor using the transaction-id watermark (docs/deduplicator.md, "The watermark").

In one REPEATABLE READ, READ ONLY transaction on the gatherer:

* ``xmin = pg_snapshot_xmin(pg_current_snapshot())``: every transaction below it has committed or aborted, so the
  rows with ``txid < xmin`` visible in this snapshot are final; a transaction still open (a late commit) has
  ``txid >= xmin`` and will be read by a later pass.
* The batch is the rows with ``cursor <= txid < upper`` with ``upper <= xmin``. Many rows share one txid, so batches
  are txid *ranges*, never LIMIT: ``upper`` is the txid of the n-th row (exclusive), so a transaction is never split
  (one bigger than the batch is taken whole).
* The rows are streamed out with ``COPY (SELECT ...) TO STDOUT`` in production's column order, ready to be COPYed
  into production's staging table without parsing, in the table's COPY format (kalshictl/schema.py): binary for
  the tables whose columns have the same types on both sides (no integer is rendered as text and parsed back), text
  for the low-volume tables whose gatherer and production shapes may differ in type while they evolve.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kalshictl.db.rows import one_row_async
from kalshictl.schema import Table

if TYPE_CHECKING:
    import psycopg

BIGINT_MAX = 9223372036854775807
# COPY out arrives one row per message; the rows are kept (and COPYed into staging) in blocks of about this size, so
# the merge sends a few hundred large writes instead of one write per row (psycopg writes up to 128 KiB unsplit).
COPY_BLOCK = 96 * 1024


class InstanceChanged(Exception):
    """The gatherer database's instance_id is not the one the cursor belongs to (it was rebuilt)."""


@dataclass
class Batch:
    """Rows of one gatherer table between two watermarks."""

    cursor: int  # lower bound (inclusive)
    upper: int  # upper bound (exclusive): the new cursor
    xmin: int  # the snapshot's xmin
    chunks: list[bytes] = field(default_factory=list)  # COPY data (table's copy_format, production column order)
    rows: int = 0  # rows in chunks
    full: bool = False  # the batch was capped (more committed rows wait beyond ``upper``)
    backlog_oldest: int | None = None  # oldest clock value (us) of visible rows at or beyond ``upper``
    suspects: list[tuple[Any, ...]] = field(default_factory=list)  # held out for the gap-trust rule

    @property
    def empty(self) -> bool:
        return self.rows == 0 and not self.suspects


def gap_covers(ticker_sql: str, alias: str = "g") -> str:
    """SQL: gap window ``alias`` covers the order book of market ``ticker_sql`` (its own channel or every channel;
    ``tickers`` NULL = every market)."""
    g = alias
    return (
        f"{g}.channel IN ('orderbook_delta', '*')"
        f" AND ({g}.tickers IS NULL OR {g}.tickers @> ARRAY[{ticker_sql}]::text[])"
    )


def suspect_condition(margin_us: int, alias: str = "d") -> str:
    """SQL: an order-book delta with occurrence > 0 recorded while this gatherer had a gap around its time."""
    a = alias
    return (
        f"({a}.occurrence > 0 AND EXISTS (SELECT 1 FROM sequence_gaps g"
        f" WHERE {gap_covers(f'{a}.ticker')}"
        f" AND {a}.exchange_ts >= g.from_ts - {int(margin_us)}"
        f" AND (g.to_ts IS NULL OR {a}.exchange_ts <= g.to_ts + {int(margin_us)})))"
    )


def _select_list(spec: Table, gatherer: str) -> str:
    from psycopg import sql

    cols = [f"d.{col}" for col in spec.names]
    cols.append(sql.Literal(gatherer).as_string(None) + "::text")
    return ", ".join(cols)


async def read_batch(
    gconn: psycopg.AsyncConnection,
    spec: Table,
    cursor: int,
    max_rows: int,
    *,
    gatherer: str,
    instance_id: str,
    gap_margin_us: int = 2_000_000,
) -> Batch:
    """Read one batch past ``cursor`` (``gconn`` in autocommit mode; the read runs in its own transaction)."""
    await gconn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    try:
        cur = await gconn.execute(
            "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint,"
            " (SELECT instance_id::text FROM gatherer_meta)"
        )
        xmin, inst = await one_row_async(cur)
        if inst != instance_id:
            raise InstanceChanged(f"{gatherer}: instance_id is now {inst}, cursor belongs to {instance_id}")
        t = spec.name
        lo, hi = str(cursor), str(xmin)
        cur = await gconn.execute(
            f"SELECT (SELECT txid::text::bigint FROM {t} WHERE txid >= %s::xid8 AND txid < %s::xid8"
            f" ORDER BY txid LIMIT 1),"
            f" (SELECT txid::text::bigint FROM {t} WHERE txid >= %s::xid8 AND txid < %s::xid8"
            f" ORDER BY txid OFFSET %s LIMIT 1)",
            (lo, hi, lo, hi, max_rows),
        )
        first, nth = await one_row_async(cur)
        batch = Batch(cursor=cursor, upper=cursor, xmin=xmin)
        if first is not None:
            if nth is None:
                batch.upper = xmin
            else:
                batch.upper = nth if nth > first else first + 1
                batch.full = True
            where = f"d.txid >= {cursor}::text::xid8 AND d.txid < {batch.upper}::text::xid8"
            if spec.gap_screened:
                cond = suspect_condition(gap_margin_us)
                cur = await gconn.execute(
                    f"SELECT {', '.join('d.' + c for c in spec.names)} FROM {t} d WHERE {where} AND {cond}"
                )
                batch.suspects = list(await cur.fetchall())
                where += f" AND NOT {cond}"
            query = (
                f"COPY (SELECT {_select_list(spec, gatherer)} FROM {t} d WHERE {where})"
                f" TO STDOUT (FORMAT {spec.copy_format.value})"
            )
            cur = gconn.cursor()
            block = bytearray()
            async with cur.copy(query) as copy:
                async for data in copy:
                    block += data
                    if len(block) >= COPY_BLOCK:
                        batch.chunks.append(bytes(block))
                        block.clear()
            if block:
                batch.chunks.append(bytes(block))
            batch.rows = max(cur.rowcount, 0)
            if not batch.rows:
                batch.chunks.clear()
        cur = await gconn.execute(
            f"SELECT min({spec.clock}) FROM (SELECT {spec.clock} FROM {t} WHERE txid >= %s::xid8"
            f" ORDER BY txid LIMIT 1000) s",
            (str(batch.upper),),
        )
        batch.backlog_oldest = (await one_row_async(cur))[0]
        return batch
    finally:
        await gconn.execute("COMMIT")
