"""Batch writers against a real gatherer database: binary COPY of every table, bisecting a refused row, and buffers
bounded in bytes as well as rows (while the database is unreachable)."""

from __future__ import annotations

import asyncio
import uuid

import orjson
import psycopg
import pytest

from kalshictl.gatherer.book_frames import book_row_fields
from kalshictl.gatherer.writers import BatchWriter, WriterSet
from kalshictl.kalshi import lifecycle_key
from kalshictl.schema import DELTAS, EVENT_TABLES, SNAPSHOTS

TID = "5afb8367-8c52-4c23-a7dd-48cfbaa65d5a"


def rows() -> dict[str, list[tuple]]:
    t = 1_795_795_829_474_000
    digest = lifecycle_key.digest("settled", "KX-A", {"result": "yes", "n": [1, 2]})
    book = book_row_fields([(800, 30000), (2200, 33300)], [(5400, 2000)])
    return {
        "trades": [(TID, t, t + 5, "KX-A", 4100, 1200, True, False, "ws", 4)],
        "orderbook_deltas": [
            (t, t + 5, "KX-A", False, 9600, -5450, 0, 3, 2),
            (t, t + 6, "KX-A", False, 9600, -5450, 1, 4, 2),
        ],
        "orderbook_snapshots": [(t + 7, t - 1, "KX-A", "ws", *book, 2, 2)],
        "tickers": [(t, t + 5, "KX-A", 4000, 4200, 4100, 100000, 30000, 410, 123, None, 500, 100, "ws", 0, 3)],
        "lifecycle_events": [
            (t, t + 5, "KX-A", "settled", orjson.dumps({"result": "yes", "n": [1, 2]}).decode(), digest, 1, 5)
        ],
        "sequence_gaps": [
            ("g1", "i1", 1, "orderbook_delta", "ob-0/0", 2, ["KX-A", "KX-B"], "seq_gap", 5, 9, t - 100, None, t, "none")
        ],
    }


async def test_binary_copy_round_trip_every_table(gatherer_dsn: str) -> None:
    async def connect() -> psycopg.AsyncConnection:
        return await psycopg.AsyncConnection.connect(gatherer_dsn)

    ws = WriterSet({spec.name: BatchWriter(spec, connect, batch_rows=100, flush_ms=10) for spec in EVENT_TABLES})
    ws.start()
    data = rows()
    for table, rs in data.items():
        for r in rs:
            assert ws[table].add(r)
    for r in data["trades"]:  # a duplicate is absorbed by ON CONFLICT
        ws["trades"].add(r)
    assert await ws.flush_all(timeout=20)
    await ws.stop()
    with psycopg.connect(gatherer_dsn) as conn:
        for spec in EVENT_TABLES:
            got = conn.execute(f"SELECT {', '.join(spec.gatherer_columns)} FROM {spec.name} ORDER BY 1, 2").fetchall()
            want = data[spec.name]
            if spec.name == "trades":
                got = [(str(r[0]), *r[1:]) for r in got]
            if spec.name == "orderbook_snapshots":  # jsonb comes back as Python objects
                want = [(*r[:4], *(orjson.loads(v) for v in r[4:8]), *r[8:]) for r in want]
            if spec.name == "lifecycle_events":
                want = [(*r[:4], orjson.loads(r[4]), *r[5:]) for r in want]
            assert sorted(got, key=repr) == sorted(want, key=repr), spec.name
        assert conn.execute("SELECT trade_id FROM trades").fetchone()[0] == uuid.UUID(TID)


async def test_refused_row_is_isolated(gatherer_dsn: str) -> None:
    async def connect() -> psycopg.AsyncConnection:
        return await psycopg.AsyncConnection.connect(gatherer_dsn)

    w = BatchWriter(SNAPSHOTS, connect, batch_rows=100, flush_ms=10)
    w.start()
    good = rows()["orderbook_snapshots"][0]
    bad = (good[0] + 1, None, "KX-A", "carrier-pigeon", *good[4:])  # violates CHECK (source IN ('ws', 'rest'))
    for r in (good, bad, (good[0] + 2, *good[1:])):
        w.add(r)
    assert await w.flush(timeout=20)
    await w.stop()
    assert (w.written, w.rejected) == (3, 1)
    with psycopg.connect(gatherer_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM orderbook_snapshots").fetchone()[0] == 2


@pytest.mark.parametrize("bound", ["bytes", "rows"])
async def test_buffer_is_bounded_in_bytes_and_rows_while_the_database_is_down(bound: str) -> None:
    async def connect() -> psycopg.AsyncConnection:
        raise psycopg.OperationalError("database is down")

    overflow: list[tuple] = []
    max_bytes = 2 * 1024 * 1024 if bound == "bytes" else 1 << 40
    max_rows = 10_000_000 if bound == "bytes" else 50
    w = BatchWriter(
        SNAPSHOTS,
        connect,
        batch_rows=10,
        flush_ms=10,
        max_buffer_rows=max_rows,
        max_buffer_bytes=max_bytes,
        on_overflow=lambda *a: overflow.append(a),
        retry_max_s=0.05,
    )
    w.start()
    levels = [(p, 100 + p) for p in range(1, 1000)]  # a deep book: ~10 kB of JSON per column
    book = book_row_fields(levels, levels)
    accepted = 0
    for i in range(1000):
        accepted += w.add((1_000 + i, None, "KX-DEEP", "ws", *book, 2, i))
    await asyncio.sleep(0.1)  # the loop keeps retrying; nothing may be lost from the buffer meanwhile
    assert w.full and w.dropped == 1000 - accepted > 0
    if bound == "bytes":
        assert w.buffered_bytes <= max_bytes and accepted * 40_000 <= max_bytes
        assert w.buffered_bytes >= 0.8 * max_bytes
    else:
        assert accepted == 50 and len(w) == 50
    assert w.failures >= 1 and not overflow  # reported once the buffer drains below the bound
    await w.stop(timeout=0.2)


async def test_deltas_direct_copy_falls_back_to_staging_on_a_duplicate(gatherer_dsn: str) -> None:
    """Deltas go straight into the keyed table; a batch holding an already-stored row (a retried commit) is written
    through staging + ON CONFLICT instead, losing nothing and duplicating nothing."""

    async def connect() -> psycopg.AsyncConnection:
        return await psycopg.AsyncConnection.connect(gatherer_dsn)

    w = BatchWriter(DELTAS, connect, batch_rows=1000, flush_ms=10)
    w.start()
    t = 1_795_795_829_474_000
    first = [(t + i, t + i, "KX-A", True, 5000, 100, 0, i + 1, 2) for i in range(10)]
    for r in first:
        w.add(r)
    assert await w.flush(timeout=20)
    assert w._direct_cooldown == 0  # the direct path took it
    for r in [*first[5:], (t + 10, t + 10, "KX-A", True, 5000, 100, 0, 11, 2)]:  # a retried tail plus one new row
        w.add(r)
    assert await w.flush(timeout=20)
    await w.stop()
    assert w._direct_cooldown > 0 and w.rejected == 0
    with psycopg.connect(gatherer_dsn) as conn:
        assert conn.execute("SELECT count(*), count(DISTINCT seq) FROM orderbook_deltas").fetchone() == (11, 11)


def _deltas(n: int, first: int = 0) -> list[tuple]:
    t = 1_795_795_829_474_000 + first
    return [(t + i, t + i, "KX-A", True, 5000, 100, 0, first + i + 1, 2) for i in range(n)]


async def test_delta_writer_group_takes_turns_and_flushes_everything(gatherer_dsn: str) -> None:
    """The deltas' two writers take the rows in turns of one batch, each on its own connection; committed-through is
    the group's minimum; stopping flushes every buffered row of every writer."""
    from kalshictl.gatherer.writers import WriterGroup, make_writer

    async def connect() -> psycopg.AsyncConnection:
        return await psycopg.AsyncConnection.connect(gatherer_dsn)

    assert DELTAS.writers == 2
    g = make_writer(DELTAS, connect, batch_rows=100, flush_ms=10, max_buffer_rows=10_000, max_buffer_bytes=1 << 30)
    assert isinstance(g, WriterGroup) and len(g.parts) == 2
    assert [p.max_buffer_rows for p in g.parts] == [5_000, 5_000]  # the bounds are shared, not doubled
    data = _deltas(1050)
    for r in data:
        assert g.add(r)
    assert [len(p) for p in g.parts] == [550, 500]  # 0-99, 200-299, ... and 100-199, ...
    assert g.committed_through_us(data[-1][1] + 1) == data[0][1]  # nothing committed yet: the oldest row
    ws = WriterSet({"orderbook_deltas": g})  # type: ignore[dict-item]
    ws.start()
    assert await ws.stop(timeout=20)
    assert g.written == 1050 and len(g) == 0 and g.committed_through_us(123) == 123
    assert all(p.written > 0 for p in g.parts)  # both connections wrote
    with psycopg.connect(gatherer_dsn) as conn:
        assert conn.execute("SELECT count(*), count(DISTINCT seq) FROM orderbook_deltas").fetchone() == (1050, 1050)


async def test_delta_writer_group_absorbs_the_same_rows_on_both_connections(gatherer_dsn: str) -> None:
    """The same keys in both writers' batches at once (a retried commit racing the next batch): the later COPY
    meets the earlier one's rows, is redone through staging + ON CONFLICT, nothing is refused or duplicated."""
    from kalshictl.gatherer.writers import make_writer

    async def connect() -> psycopg.AsyncConnection:
        return await psycopg.AsyncConnection.connect(gatherer_dsn)

    g = make_writer(DELTAS, connect, batch_rows=100, flush_ms=10)
    for r in [*_deltas(100), *_deltas(100), *_deltas(50, first=100)]:
        g.add(r)
    assert [len(p) for p in g.parts] == [150, 100]
    g.start()
    assert await g.stop(timeout=20)
    assert g.rejected == 0 and g.failures == 0 and g.written == 250
    with psycopg.connect(gatherer_dsn) as conn:
        assert conn.execute("SELECT count(*), count(DISTINCT seq) FROM orderbook_deltas").fetchone() == (150, 150)


async def test_delta_writer_group_is_bounded_while_the_database_is_down() -> None:
    from kalshictl.gatherer.writers import make_writer

    async def connect() -> psycopg.AsyncConnection:
        raise psycopg.OperationalError("database is down")

    overflow: list[tuple] = []
    g = make_writer(
        DELTAS,
        connect,
        batch_rows=10,
        flush_ms=10,
        max_buffer_rows=50,
        on_overflow=lambda *a: overflow.append(a),
        retry_max_s=0.05,
    )
    g.start()
    accepted = sum(g.add(r) for r in _deltas(1000))
    await asyncio.sleep(0.1)
    assert accepted == 50 and len(g) == 50 and [len(p) for p in g.parts] == [25, 25]  # both shares used
    assert g.full and g.dropped == 950 and g.failures >= 2 and not overflow
    await g.stop(timeout=0.2)
