"""One queue drained onto one database connection: the loop the table writers and the gap log share.

A :class:`WriteLoop` owns a connection and a task. The task sleeps until its :class:`Queue` has rows (or operations),
waits until a batch is due (the queue says when; a flush or a stop makes it due at once), takes the batch, writes it
and tells the queue it is committed. A failed write gives the batch back to the queue in order (nothing is lost),
closes the connection and retries after the next delay of its :class:`~kalshictl.backoff.Backoff` (wall time), so a
database that is down for a while receives everything once it returns (docs/gatherer.md "Modules": ``writers.py``,
``gaps.py``). :meth:`WriteLoop.flush` waits until everything queued so far is committed; :meth:`WriteLoop.stop`
flushes within a timeout, ends the task and closes the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from kalshictl.backoff import Backoff
from kalshictl.errors import summarize

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger("kalshictl.gatherer.writers")

Connect = Callable[[], Awaitable["psycopg.AsyncConnection"]]
Setup = Callable[["psycopg.AsyncConnection"], Awaitable[None]]
B = TypeVar("B")
CONNECT_TIMEOUT_S = 10.0
LOG_EVERY = 20  # failures: the first and every 20th is logged


class Queue(Protocol[B]):
    """What a :class:`WriteLoop` drains: rows or operations queued by their producer."""

    def __len__(self) -> int:
        """How many are queued or being written (0: everything given so far is committed)."""
        ...

    def due_in(self) -> float:
        """Seconds until the next batch should be written (0 or less: now)."""
        ...

    def take(self) -> B | None:
        """The next batch (None: nothing to write after all)."""
        ...

    async def write(self, batch: B) -> None:
        """Write and commit ``batch`` (on :meth:`WriteLoop.connection`); raise to have it retried."""
        ...

    def committed(self, batch: B) -> None:
        """``batch`` is committed."""
        ...

    def give_back(self, batch: B) -> None:
        """``batch`` was not committed (an error or a cancellation): queue it again, in front, in order."""
        ...

    def failed(self, exc: Exception) -> None:
        """A write failed (count it); the loop logs it and retries."""
        ...


class WriteLoop(Generic[B]):
    """Drains one :class:`Queue` onto one connection (see module docs)."""

    def __init__(
        self,
        name: str,
        connect: Connect,
        queue: Queue[B],
        backoff: Backoff,
        *,
        setup: Setup | None = None,
    ) -> None:
        self.name = name
        self.queue = queue
        self.backoff = backoff
        self._connect = connect
        self._setup = setup
        self._conn: psycopg.AsyncConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._kick = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self.stopping = False
        self.flush_requested = False
        self.connected = False
        self.failures = 0
        self.last_error: str | None = None

    # ----- producer side --------------------------------------------------------------------------------------
    def wake(self) -> None:
        """Something was queued (or a batch filled up): the loop writes when it is due."""
        self._idle.clear()
        self._kick.set()

    # ----- lifecycle ------------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"writer-{self.name}")

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far is committed; False on timeout."""
        if not len(self.queue):
            return True
        self.flush_requested = True
        self._kick.set()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except TimeoutError:
            return False

    async def stop(self, timeout: float = 10.0) -> bool:
        """Flush what is queued (within ``timeout``), end the loop and close the connection."""
        self.stopping = True
        ok = await self.flush(timeout)
        task, self._task = self._task, None
        if task is not None:
            # asyncio.wait_for (3.11) swallows a cancel that meets an inner await finishing in the same step (the
            # loop then carried on retrying and this await never returned): cancel until the loop has ended
            while not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=0.5)
            if not task.cancelled():
                task.exception()  # retrieve it: the loop only ends by cancellation
        await self.close()
        if not ok:
            log.error("%s: %d still queued at shutdown", self.name, len(self.queue))
        return ok

    async def connection(self) -> psycopg.AsyncConnection:
        """The loop's connection (opened, in a transaction-per-batch mode, and set up, when needed)."""
        if self._conn is None or self._conn.closed:
            conn = await asyncio.wait_for(self._connect(), CONNECT_TIMEOUT_S)
            self._conn = conn
            await conn.set_autocommit(False)
            if self._setup is not None:
                await self._setup(conn)
            self.connected = True
        return self._conn

    @property
    def broken(self) -> bool:
        """The connection was lost (a write on it failed for want of a database, not for its data)."""
        return self._conn is not None and self._conn.closed

    async def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn = None
        self.connected = False

    # ----- the loop -------------------------------------------------------------------------------------------
    async def _run(self) -> None:
        queue = self.queue
        delays = self.backoff.delays()
        while True:
            if not len(queue):
                self.flush_requested = False
                self._idle.set()
                self._kick.clear()
                await self._kick.wait()
                self._kick.clear()  # woken by the first row: now wait for the batch or its deadline
                continue
            wait = queue.due_in()
            if wait > 0 and not self.stopping and not self.flush_requested and not self._kick.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._kick.wait(), wait)
            self._kick.clear()
            batch = queue.take()
            if batch is None:
                continue
            try:
                await queue.write(batch)
            except asyncio.CancelledError:
                queue.give_back(batch)
                raise
            except Exception as exc:
                queue.give_back(batch)  # keep order; nothing is lost
                self.failures += 1
                self.last_error = summarize(exc)
                queue.failed(exc)
                if self.failures % LOG_EVERY == 1:
                    log.warning("%s: write failed (%s); %d queued, retrying", self.name, self.last_error, len(queue))
                await self.close()
                await asyncio.sleep(next(delays))
                continue
            delays = self.backoff.delays()
            queue.committed(batch)
