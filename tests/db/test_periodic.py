"""kalshictl/db/periodic.py: a database task run now and every interval of the one clock, on one kept connection."""

from __future__ import annotations

import asyncio

import psycopg

from kalshictl import clock
from kalshictl.clock import ManualClock
from kalshictl.db.embedded import PostgresCluster
from kalshictl.db.periodic import Periodic


async def _until(cond, what: str, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.02)


async def test_runs_now_and_every_interval_on_one_connection_and_retries_after_a_failure(
    pg_cluster: PostgresCluster, fresh_db: str
) -> None:
    dsn = pg_cluster.dsn(fresh_db)
    attempts: list[int] = []
    pids: list[int] = []
    errors: list[str] = []
    conns: list[psycopg.AsyncConnection] = []

    async def connect() -> psycopg.AsyncConnection:
        attempts.append(len(attempts))
        if len(attempts) == 1:
            raise OSError("database not up yet")
        conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
        conns.append(conn)
        return conn

    async def body(conn: psycopg.AsyncConnection) -> None:
        pids.append((await (await conn.execute("SELECT pg_backend_pid()")).fetchone())[0])

    manual = ManualClock(clock.now_us())
    with clock.installed(manual):
        timer = Periodic("test-timer", 60, body, lambda exc: errors.append(str(exc)))
        timer.start(connect)
        try:
            await _until(lambda: manual.sleepers == 1, "the first tick")
            assert (errors, pids) == (["database not up yet"], [])  # reported, not raised; no run without a connection
            await manual.advance(59)
            assert pids == []  # not before interval_s of clock time
            await manual.advance(1)
            await _until(lambda: len(pids) == 1, "a run on the next tick")
            await manual.advance(60)
            await _until(lambda: len(pids) == 2, "the tick after")
            assert pids[0] == pids[1] and len(conns) == 1  # the connection is kept between runs
        finally:
            await timer.stop()
    assert conns[0].closed  # stop closes it
    assert errors == ["database not up yet"]
