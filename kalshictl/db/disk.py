"""Free space of a database's filesystem, seen from a service that may or may not run on the database's host.

Two ways, configured (docs/retention.md, "How the gatherer sees its disk"):

1. ``path``: ``statvfs`` of that path (a directory on the database's filesystem, e.g. the data directory's mount) —
   exact, for a database on this host.
2. ``size_bytes``: ``size_bytes - pg_database_size(current_database())`` — for a remote database (a managed volume of
   known size); it counts only this database, not WAL or other databases, so leave headroom.

With neither the free space is unknown: reported, never guessed (the service role cannot read ``data_directory``,
and a database on another host has its own filesystem).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kalshictl.db.rows import one_row_async

if TYPE_CHECKING:
    import psycopg


@dataclass(frozen=True)
class DiskReading:
    """One reading: where it came from, the filesystem's size and free bytes, and the database's own size."""

    source: str  # "statvfs:<path>", "size_bytes" or "unknown"
    total_bytes: int | None
    free_bytes: int | None
    database_bytes: int | None
    detail: str | None = None  # why the reading is unknown

    @property
    def free_percent(self) -> float | None:
        if self.total_bytes is None or self.free_bytes is None or self.total_bytes <= 0:
            return None
        return 100.0 * max(0, self.free_bytes) / self.total_bytes

    def as_dict(self) -> dict[str, Any]:
        pct = self.free_percent
        return {
            "source": self.source,
            "total_bytes": self.total_bytes,
            "free_bytes": self.free_bytes,
            "free_percent": None if pct is None else round(pct, 2),
            "database_bytes": self.database_bytes,
            **({"detail": self.detail} if self.detail else {}),
        }


def statvfs_free(path: str) -> tuple[int, int]:
    """(total, free-for-unprivileged) bytes of the filesystem holding ``path``."""
    st = os.statvfs(path)
    return st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize


async def read_disk(conn: psycopg.AsyncConnection, *, path: str | None, size_bytes: int | None) -> DiskReading:
    """Read the database's filesystem free space by the configured method (see the module docstring)."""
    cur = await conn.execute("SELECT pg_database_size(current_database())")
    db_bytes = int((await one_row_async(cur))[0])
    if path:
        total, free = statvfs_free(path)
        return DiskReading(f"statvfs:{path}", total, free, db_bytes)
    if size_bytes:
        return DiskReading("size_bytes", int(size_bytes), int(size_bytes) - db_bytes, db_bytes)
    return DiskReading("unknown", None, None, db_bytes, "set disk.path (local database) or disk.size_bytes (remote)")
