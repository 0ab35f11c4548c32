"""Free space of a database's filesystem, seen from a service that may or may not run on the database's host.

Three ways, in order (docs/retention.md, "How the gatherer sees its disk"):

1. ``path`` configured: ``statvfs`` of that path (a directory on the database's filesystem, e.g. the data directory's
   mount) — exact, for a database on this host.
2. ``size_bytes`` configured: ``size_bytes - pg_database_size(current_database())`` — for a remote database (a
   managed volume of known size); it counts only this database, not WAL or other databases, so leave headroom.
3. Neither: if the database is local (a socket or loopback host) and the role may read ``data_directory``
   (superuser or ``pg_read_all_settings``), ``statvfs`` of it; otherwise the free space is unknown (reported, not
   guessed).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

LOCAL_HOSTS = ("", "localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class DiskReading:
    """One reading: where it came from, the filesystem's size and free bytes, and the database's own size."""

    source: str  # "statvfs:<path>", "size_bytes", "data_directory:<path>" or "unknown"
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


def _is_local(conn: psycopg.AsyncConnection) -> bool:
    host = conn.info.host or ""
    return host.startswith("/") or host in LOCAL_HOSTS


async def read_disk(conn: psycopg.AsyncConnection, *, path: str | None, size_bytes: int | None) -> DiskReading:
    """Read the database's filesystem free space (see the module docstring for the order of methods)."""
    cur = await conn.execute("SELECT pg_database_size(current_database())")
    db_bytes = int((await cur.fetchone())[0])
    if path:
        total, free = statvfs_free(path)
        return DiskReading(f"statvfs:{path}", total, free, db_bytes)
    if size_bytes:
        return DiskReading("size_bytes", int(size_bytes), int(size_bytes) - db_bytes, db_bytes)
    if not _is_local(conn):
        return DiskReading("unknown", None, None, db_bytes, "remote database: set disk.size_bytes")
    cur = await conn.execute(
        "SELECT CASE WHEN pg_has_role(current_user, 'pg_read_all_settings', 'USAGE')"
        " THEN current_setting('data_directory') END"
    )
    data_dir = (await cur.fetchone())[0]
    if not data_dir:
        return DiskReading("unknown", None, None, db_bytes, "cannot read data_directory: set disk.path")
    try:
        total, free = statvfs_free(data_dir)
    except OSError as exc:
        return DiskReading("unknown", None, None, db_bytes, f"statvfs {data_dir}: {exc.strerror}: set disk.path")
    return DiskReading(f"data_directory:{data_dir}", total, free, db_bytes)
