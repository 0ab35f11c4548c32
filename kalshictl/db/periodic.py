"""A database task on a timer: one run now and every interval of the one clock (kalshictl/clock.py), on one autocommit
connection kept between runs and reopened after a failure (docs/retention.md: the disk watch and the retention pass).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from kalshictl import clock

if TYPE_CHECKING:
    import psycopg

Connect = Callable[[], Awaitable["psycopg.AsyncConnection"]]


class Periodic:
    """Runs ``body(conn)`` now and every ``interval_s``; a failure (connecting or in ``body``) goes to ``on_error``,
    closes the connection, and the next tick tries again."""

    def __init__(
        self,
        name: str,
        interval_s: float,
        body: Callable[[psycopg.AsyncConnection], Awaitable[object]],
        on_error: Callable[[Exception], None],
    ) -> None:
        self.name = name
        self.interval_s = interval_s
        self._body = body
        self._on_error = on_error
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._conn: psycopg.AsyncConnection | None = None

    def start(self, connect: Connect) -> None:
        """Run now and every ``interval_s`` on connections from ``connect`` (autocommit)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(connect), name=self.name)

    async def stop(self) -> None:
        """Stop the timer: a run in flight gets 2 s, then is cancelled; the connection is closed."""
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, 2)
            self._task = None
        await self._close()

    async def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn = None

    async def _run(self, connect: Connect) -> None:
        while not self._stop.is_set():
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = await connect()
                await self._body(self._conn)
            except Exception as exc:  # an unreachable database is reported by its own component; retry next tick
                self._on_error(exc)
                await self._close()
            if await clock.sleep(self.interval_s, self._stop):
                return
