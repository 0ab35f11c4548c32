"""Sync cursors in production: per gatherer x table, the gatherer xid watermark below which all rows are merged.

A cursor belongs to one gatherer database *instance* (``gatherer_meta.instance_id``). Transaction ids restart when a
gatherer database is rebuilt, so a cursor whose instance differs from the gatherer's is restarted from 0 (loudly);
``ON CONFLICT DO NOTHING`` absorbs whatever the rebuilt database re-delivers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypedDict

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger("kalshictl.dedup.cursors")


class CursorView(TypedDict):
    """A cursor as ``dedup status`` shows it."""

    gatherer: str
    table: str
    instance_id: str | None
    xmin_cursor: int
    rows_read: int
    rows_merged: int
    duplicates: int
    last_received_at: int | None
    updated_at: str | None


@dataclass
class Cursor:
    """One row of ``sync_cursors``."""

    gatherer: str
    table: str
    instance_id: str | None
    xmin: int
    rows_read: int = 0
    rows_merged: int = 0
    last_received_at: int | None = None
    updated_at: str | None = None

    def as_dict(self) -> CursorView:
        return {
            "gatherer": self.gatherer,
            "table": self.table,
            "instance_id": self.instance_id,
            "xmin_cursor": self.xmin,
            "rows_read": self.rows_read,
            "rows_merged": self.rows_merged,
            "duplicates": self.rows_read - self.rows_merged,
            "last_received_at": self.last_received_at,
            "updated_at": self.updated_at,
        }


_SELECT = (
    "SELECT gatherer, table_name, instance_id::text, xmin_cursor, rows_read, rows_merged, last_received_at,"
    " updated_at::text FROM sync_cursors"
)


async def load_cursors(pconn: psycopg.AsyncConnection) -> dict[tuple[str, str], Cursor]:
    """All cursors, keyed by (gatherer, table)."""
    cur = await pconn.execute(_SELECT + " ORDER BY gatherer, table_name")
    return {(r[0], r[1]): Cursor(*r) for r in await cur.fetchall()}


async def load_cursor(pconn: psycopg.AsyncConnection, gatherer: str, table: str) -> Cursor | None:
    """One cursor, or None if it does not exist yet."""
    cur = await pconn.execute(_SELECT + " WHERE gatherer = %s AND table_name = %s", (gatherer, table))
    row = await cur.fetchone()
    return Cursor(*row) if row else None


async def reconcile(pconn: psycopg.AsyncConnection, gatherer: str, table: str, instance_id: str) -> Cursor:
    """Return the cursor for (gatherer, table) on ``instance_id``, creating it or restarting it from 0 if the
    gatherer database was rebuilt. ``pconn`` must be in autocommit mode."""
    cursor = await load_cursor(pconn, gatherer, table)
    if cursor is None:
        await pconn.execute(
            "INSERT INTO sync_cursors (gatherer, table_name, instance_id, xmin_cursor) VALUES (%s, %s, %s, 0)"
            " ON CONFLICT (gatherer, table_name) DO NOTHING",
            (gatherer, table, instance_id),
        )
        created = await load_cursor(pconn, gatherer, table)
        if created is None:  # (the row was just inserted, or another deduplicator's insert won)
            raise RuntimeError(f"sync_cursors has no row for {gatherer}/{table} right after inserting it")
        return created
    if cursor.instance_id == instance_id:
        return cursor
    if cursor.instance_id is None:
        await pconn.execute(
            "UPDATE sync_cursors SET instance_id = %s WHERE gatherer = %s AND table_name = %s",
            (instance_id, gatherer, table),
        )
        cursor.instance_id = instance_id
        return cursor
    log.warning(
        "GATHERER DATABASE REBUILT: %s instance_id changed %s -> %s; restarting the %s cursor from 0 "
        "(was xid %d); duplicates will be absorbed",
        gatherer,
        cursor.instance_id,
        instance_id,
        table,
        cursor.xmin,
    )
    await pconn.execute(
        "UPDATE sync_cursors SET instance_id = %s, xmin_cursor = 0, updated_at = now()"
        " WHERE gatherer = %s AND table_name = %s",
        (instance_id, gatherer, table),
    )
    cursor.instance_id, cursor.xmin = instance_id, 0
    return cursor
