"""Reader + merge + cursors on real databases: the txid watermark never skips a late commit."""

from __future__ import annotations

import asyncio

import psycopg

from kalshictl.dedup.loops import SyncLoop
from kalshictl.dedup.metrics import DedupMetrics
from kalshictl.schema import TABLES, TRADES
from tests.dedup.conftest import DedupEnv, now_us, trade_row, write_misc, write_trades


def _loop(env: DedupEnv, idx: int, table: str = "trades", **sync) -> SyncLoop:
    s = env.settings(**sync)
    return SyncLoop(s.gatherers[idx], TABLES[table], s.production, s.sync, DedupMetrics(), asyncio.Event())


def _trade_ids(env: DedupEnv) -> list[str]:
    with env.prod() as c:
        return [str(r[0]) for r in c.execute("SELECT trade_id FROM trades ORDER BY trade_id")]


async def test_late_commit_is_not_skipped(dedup_env: DedupEnv) -> None:
    base = now_us()
    g = dedup_env.gatherers[0]
    loop = _loop(dedup_env, 0)
    late = g.conn(autocommit=False)
    write_trades(late, [trade_row(0, base)])  # open transaction: lowest txid, commits last
    with g.conn() as c:
        for i in range(1, 6):
            write_trades(c, [trade_row(i, base)])
    await loop.step()
    assert len(_trade_ids(dedup_env)) == 0  # the open transaction holds the watermark below every later one
    late.commit()
    late.close()
    with g.conn() as c:
        write_trades(c, [trade_row(6, base)])
    await loop.step()
    await loop.step()
    assert len(_trade_ids(dedup_env)) == 7
    # cursor persisted in production, equal to the loop's
    with dedup_env.prod() as c:
        xmin, read, merged = c.execute(
            "SELECT xmin_cursor, rows_read, rows_merged FROM sync_cursors WHERE gatherer = 'gatherer-1'"
            " AND table_name = 'trades'"
        ).fetchone()
    assert xmin == loop.cursor and read == merged == 7
    await loop.close_gatherer()
    await loop.close_production()


async def test_batches_are_txid_ranges_and_never_split_a_transaction(dedup_env: DedupEnv) -> None:
    base = now_us()
    g = dedup_env.gatherers[0]
    with g.conn() as c:
        write_trades(c, [trade_row(i, base) for i in range(0, 450)])  # one big transaction
        for k in range(10):
            write_trades(c, [trade_row(i, base) for i in range(450 + k * 10, 460 + k * 10)])
    loop = _loop(dedup_env, 0, min_batch_rows=100, max_batch_rows=200)
    assert await loop.step() is True  # capped: the 450-row transaction taken whole
    assert len(_trade_ids(dedup_env)) == 450
    while await loop.step():
        pass
    assert len(_trade_ids(dedup_env)) == 550
    assert loop.lag_s == 0.0
    await loop.close_gatherer()
    await loop.close_production()


async def test_a_batch_larger_than_a_copy_block_is_merged_whole(dedup_env: DedupEnv) -> None:
    """COPY-out rows are kept in blocks of ~COPY_BLOCK bytes; a batch spanning several blocks (rows split across
    none: the blocks are one byte stream) lands whole."""
    from kalshictl.dedup.reader import COPY_BLOCK, read_batch

    base = now_us()
    with dedup_env.gatherers[0].conn() as c:
        write_trades(c, [trade_row(i, base) for i in range(5000)])
    loop = _loop(dedup_env, 0, min_batch_rows=10_000)
    await loop._connect()
    assert loop.gconn is not None and loop.instance_id is not None
    batch = await read_batch(
        loop.gconn, TRADES, loop.cursor, 10_000, gatherer="gatherer-1", instance_id=loop.instance_id
    )
    assert batch.rows == 5000 and len(batch.chunks) >= 3
    assert all(len(b) >= COPY_BLOCK for b in batch.chunks[:-1])
    assert await loop.step() is False
    assert len(_trade_ids(dedup_env)) == 5000
    await loop.close_gatherer()
    await loop.close_production()


async def test_overlap_is_absorbed_and_counted(dedup_env: DedupEnv) -> None:
    base = now_us()
    truth = [trade_row(i, base) for i in range(300)]
    views = [truth[:200], truth[100:], truth[::2]]
    for g, view in zip(dedup_env.gatherers, views, strict=True):
        with g.conn() as c:
            write_trades(c, view)
            for i in range(20):
                write_misc(c, i, base)
    loops = [_loop(dedup_env, i, t) for i in range(3) for t in TABLES]
    for lp in loops:
        while await lp.step():
            pass
    assert _trade_ids(dedup_env) == sorted(r[0] for r in truth)
    assert dedup_env.count("tickers") == 20 and dedup_env.count("lifecycle_events") == 20
    assert dedup_env.count("orderbook_snapshots") == 60  # snapshots are observations: one per gatherer
    with dedup_env.prod() as c:
        payload = c.execute("SELECT payload->>'a' FROM lifecycle_events LIMIT 1").fetchone()[0]
        assert payload == "x\ny"
        read, merged = c.execute(
            "SELECT sum(rows_read), sum(rows_merged) FROM sync_cursors WHERE table_name = 'trades'"
        ).fetchone()
    assert (read, merged) == (200 + 200 + 150, 300)
    for lp in loops:
        await lp.close_gatherer()
        await lp.close_production()


async def test_rebuilt_gatherer_restarts_its_cursor(dedup_env: DedupEnv) -> None:
    base = now_us()
    g = dedup_env.gatherers[0]
    with g.conn() as c:
        write_trades(c, [trade_row(i, base) for i in range(50)])
    loop = _loop(dedup_env, 0)
    await loop.step()
    old_cursor = loop.cursor
    assert old_cursor > 0
    # rebuild: new instance id; the new database's xids may be far below the old cursor
    with g.conn() as c:
        c.execute("TRUNCATE trades")
        c.execute("UPDATE gatherer_meta SET instance_id = gen_random_uuid()")
        write_trades(c, [trade_row(i, base) for i in range(40, 80)])
    try:
        await loop.step()
        raise AssertionError("expected InstanceChanged")
    except Exception as exc:
        assert type(exc).__name__ == "InstanceChanged"
    await loop.close_gatherer()
    await loop.step()  # reconnect: cursor reset to 0 and everything re-read
    assert loop.cursor >= 0
    assert len(_trade_ids(dedup_env)) == 80
    await loop.close_gatherer()
    await loop.close_production()
    assert TRADES.name == "trades" and psycopg
