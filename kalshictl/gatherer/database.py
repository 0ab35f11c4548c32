"""The gatherer's own session on its local database: liveness ping, partitions ahead, the coverage heartbeat.

The table writers and the gap log write on their own connections; this one session answers /health's database
component (``db_connected``, ``db_ping_ms``), runs ``kalshi_ensure_partitions()`` at start-up and hourly, and
reads/advances ``gatherer_meta.last_alive_us`` — when this gatherer last had everything it received committed, from
which the next start records its downtime as a ``restart`` window (docs/gatherer.md "Gaps are data").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psycopg

    from kalshictl.gatherer.metrics import GathererMetrics
    from kalshictl.gatherer.write_loop import Connect

log = logging.getLogger("kalshictl.gatherer")

TIMEOUT_S = 5.0


class LocalDatabase:
    """One autocommit session on the gatherer's database, reopened by :meth:`ping` whenever it broke."""

    def __init__(self, name: str, connect: Connect, metrics: GathererMetrics) -> None:
        self.name = name
        self._connect = connect
        self.metrics = metrics
        self._conn: psycopg.AsyncConnection | None = None
        self.connected = False
        self.ping_ms: float | None = None

    async def open(self) -> int | None:
        """Connect, make sure partitions exist ahead, and return the last heartbeat (None on a fresh database);
        raises while the database cannot be reached."""
        from kalshictl.db.migrate import ensure_partitions_async

        conn = await self.ping()
        await ensure_partitions_async(conn)
        return await self._read_heartbeat(conn)

    async def ping(self) -> psycopg.AsyncConnection:
        """Check the session (reconnecting if needed) and publish the result; raises when the database is away."""
        from kalshictl.db.connect import ping_async

        try:
            if self._conn is None or self._conn.closed:
                self._conn = await asyncio.wait_for(self._connect(), TIMEOUT_S)
                await self._conn.set_autocommit(True)
            conn = self._conn
            self.ping_ms = await asyncio.wait_for(ping_async(conn), TIMEOUT_S)
            self.connected = True
            self.metrics.db_ping.set(self.ping_ms / 1000.0)
            self.metrics.db_connected.set(1)
            return conn
        except Exception:
            self.connected = False
            self.ping_ms = None
            self.metrics.db_ping.set(float("nan"))
            self.metrics.db_connected.set(0)
            await self.close()
            raise

    async def ensure_partitions(self) -> bool:
        """Create the partitions ahead; False when the session is down (try again later)."""
        from kalshictl.db.migrate import ensure_partitions_async

        if self._conn is None or self._conn.closed:
            return False
        await ensure_partitions_async(self._conn)
        return True

    async def _read_heartbeat(self, conn: psycopg.AsyncConnection) -> int | None:
        try:
            cur = await conn.execute("SELECT last_alive_us FROM gatherer_meta")
            row = await cur.fetchone()
        except Exception as exc:  # schema older than migration 002
            log.warning("%s: no coverage heartbeat (%s); run `kalshictl migrate`", self.name, exc)
            return None
        return int(row[0]) if row and row[0] is not None else None

    async def write_heartbeat(self, through_us: int) -> None:
        """Advance the coverage heartbeat to ``through_us``."""
        if self._conn is not None and not self._conn.closed:
            await self._conn.execute("UPDATE gatherer_meta SET last_alive_us = %s", (through_us,))

    async def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
        self._conn = None

    async def shut(self) -> None:
        """Close the session for good (shutdown)."""
        await self.close()
        self.connected = False
