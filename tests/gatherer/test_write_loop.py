"""kalshictl/gatherer/write_loop.py against a real database: a queue drained onto one connection keeps every item
and its order while the database is away, writes it once it returns, makes a batch due at once on flush, and
writes what is queued on stop."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from kalshictl.backoff import Backoff
from kalshictl.gatherer.write_loop import WriteLoop


class Numbers:
    """A queue of integers written into ``loop_rows`` (one transaction per batch)."""

    def __init__(self, due_s: float = 0.0, batch: int = 3) -> None:
        self.items: list[int] = []
        self.in_flight = 0
        self.due_s = due_s
        self.batch = batch
        self.failures: list[str] = []
        self.loop: WriteLoop[list[int]] | None = None

    def put(self, n: int) -> None:
        self.items.append(n)
        assert self.loop is not None
        self.loop.wake()

    def __len__(self) -> int:
        return len(self.items) + self.in_flight

    def due_in(self) -> float:
        return self.due_s

    def take(self) -> list[int] | None:
        batch, self.items = self.items[: self.batch], self.items[self.batch :]
        self.in_flight = len(batch)
        return batch or None

    async def write(self, batch: list[int]) -> None:
        assert self.loop is not None
        conn = await self.loop.connection()
        async with conn.transaction():
            async with conn.cursor() as cur:
                await cur.executemany("INSERT INTO loop_rows (n) VALUES (%s)", [(n,) for n in batch])

    def committed(self, batch: list[int]) -> None:
        self.in_flight = 0

    def give_back(self, batch: list[int]) -> None:
        self.items[:0] = batch
        self.in_flight = 0

    def failed(self, exc: Exception) -> None:
        self.failures.append(str(exc))


def _stored(dsn: str) -> list[int]:
    with psycopg.connect(dsn) as conn:
        return [r[0] for r in conn.execute("SELECT n FROM loop_rows ORDER BY id")]


@pytest.fixture
def table(gatherer_dsn: str) -> str:
    with psycopg.connect(gatherer_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE loop_rows (id bigserial PRIMARY KEY, n int NOT NULL)")
    return gatherer_dsn


def _loop(dsn: str, queue: Numbers, down: list[bool], connects: list[int]) -> WriteLoop[list[int]]:
    async def connect() -> psycopg.AsyncConnection:
        connects.append(1)
        if down[0]:
            raise psycopg.OperationalError("database is down")
        return await psycopg.AsyncConnection.connect(dsn)

    loop = WriteLoop("loop_rows", connect, queue, Backoff(0.01, 0.05))
    queue.loop = loop
    return loop


async def test_items_queued_while_the_database_is_down_are_written_in_order_once_it_returns(table: str) -> None:
    down, connects = [True], []
    q = Numbers()
    loop = _loop(table, q, down, connects)
    loop.start()
    for n in range(10):
        q.put(n)
    assert not await loop.flush(0.3)  # nothing can be committed yet
    assert loop.failures >= 2 and q.failures and not loop.connected and len(q) == 10  # retried, nothing lost
    assert loop.last_error is not None and "database is down" in loop.last_error
    down[0] = False
    assert await loop.flush(10)
    assert _stored(table) == list(range(10))
    assert loop.connected
    await loop.stop()
    assert not loop.connected


async def test_a_flush_makes_a_batch_due_at_once(table: str) -> None:
    q = Numbers(due_s=3600.0, batch=100)  # left alone, the batch would wait an hour
    loop = _loop(table, q, [False], [])
    loop.start()
    q.put(1)
    assert await loop.flush(10)
    assert _stored(table) == [1]
    await loop.stop()


async def test_stop_writes_what_is_queued_and_ends_the_task(table: str) -> None:
    q = Numbers(due_s=3600.0)
    loop = _loop(table, q, [False], [])
    loop.start()
    for n in range(7):
        q.put(n)
    assert await loop.stop(10)
    assert _stored(table) == list(range(7))
    assert len(q) == 0


async def test_stop_gives_up_at_its_timeout_while_the_database_stays_down(table: str) -> None:
    q = Numbers()
    loop = _loop(table, q, [True], [])
    loop.start()
    q.put(1)
    started = asyncio.get_running_loop().time()
    assert not await loop.stop(0.3)
    assert asyncio.get_running_loop().time() - started < 5
    assert len(q) == 1  # still held: given back, never dropped
