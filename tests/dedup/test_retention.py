"""Gatherer retention on real databases (docs/retention.md): the deduplicator records how far it merged, and
``kalshictl retention run`` drops only partitions whose every row is merged — unmerged rows survive
``--keep-days 0`` — through the owner's audited functions; the gatherer role cannot drop anything itself."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from kalshictl.db.roles import OWNER_ROLE, ROLES, ensure_role
from kalshictl.dedup.loops import SyncLoop
from kalshictl.dedup.metrics import DedupMetrics
from kalshictl.schema import TRADES
from tests.dedup.conftest import GDB, DedupEnv, now_us, trade_row, write_trades
from tests.helpers import write_config

GATHERER_PW = "gatherer-pw-19"
DAY_US = 86_400_000_000
ROOT = Path(__file__).resolve().parents[2]


def _gatherer_role(g: GDB) -> None:
    with g.conn() as c:
        ensure_role(c, next(r for r in ROLES if r.name == "gatherer"), GATHERER_PW, g.db)


def _old_day_partition(g: GDB, days_ago: int) -> tuple[str, int]:
    """Create the trades partition of the UTC day ``days_ago`` (as kalshi_ensure_partitions names it, as the
    owner); returns (name, its first µs)."""
    chunk = now_us() // DAY_US - days_ago
    name = f"trades_p{chunk}"
    with g.conn() as c:
        c.execute(f"SET ROLE {OWNER_ROLE}")
        c.execute(
            f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF trades FOR VALUES FROM ({chunk * DAY_US})"
            f" TO ({(chunk + 1) * DAY_US})"
        )
    return name, chunk * DAY_US


def _merge_all(env: DedupEnv, idx: int = 0) -> SyncLoop:
    s = env.settings()
    loop = SyncLoop(s.gatherers[idx], TRADES, s.production, s.sync, DedupMetrics(), asyncio.Event())

    async def run() -> None:
        while await loop.step():
            pass
        await loop.close_gatherer()
        await loop.close_production()

    asyncio.run(run())
    return loop


def _retention_cli(tmp_path: Path, g: GDB, *args: str) -> dict:
    cfg = write_config(
        tmp_path / "gatherer.yaml",
        {
            "gatherer": {
                "name": g.name,
                "database": {"dsn": g.cluster.dsn(g.db, "gatherer"), "password": "env:KT_GATHERER_PW"},
            }
        },
    )
    env = {**os.environ, "KT_GATHERER_PW": GATHERER_PW}
    out = subprocess.run(
        [sys.executable, "-m", "kalshictl", "retention", "run", "--config", str(cfg), "--json", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _partitions(g: GDB) -> set[str]:
    with g.conn() as c:
        return {
            r[0]
            for r in c.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                " WHERE i.inhparent = 'trades'::regclass"
            )
        }


def _ids_in(conn: psycopg.Connection, table: str, lo: int, hi: int) -> set[str]:
    rows = conn.execute(f"SELECT trade_id::text FROM {table} WHERE exchange_ts >= %s AND exchange_ts < %s", (lo, hi))
    return {r[0] for r in rows}


def test_unmerged_rows_survive_keep_days_zero_and_merged_old_partitions_go(dedup_env: DedupEnv, tmp_path: Path):
    g = dedup_env.gatherers[0]
    _gatherer_role(g)
    p10, d10 = _old_day_partition(g, 10)
    p9, d9 = _old_day_partition(g, 9)
    p8, d8 = _old_day_partition(g, 8)
    with g.conn() as c:
        write_trades(c, [trade_row(i, d10 + 1000) for i in range(50)])  # day -10: merged below
        write_trades(c, [trade_row(i, d9 + 1000) for i in range(50, 80)])  # day -9: merged below ...
    first = _merge_all(dedup_env)
    with g.conn() as c:
        write_trades(c, [trade_row(i, d9 + 2000) for i in range(80, 90)])  # ... and 10 more rows after the merge
        write_trades(c, [trade_row(i, d8 + 1000) for i in range(90, 100)])  # day -8: nothing merged
        ledger = c.execute("SELECT merged_below::text::bigint FROM kalshi_merge_ledger WHERE table_name = 'trades'")
        assert ledger.fetchone()[0] == first.cursor  # the loop recorded its cursor after the merge

    dry = _retention_cli(tmp_path, g, "--keep-days", "0", "--dry-run")
    verdicts = {p["partition"]: p["verdict"] for p in dry["partitions"] if p["table"] == "trades"}
    assert (verdicts[p10], verdicts[p9], verdicts[p8]) == ("drop", "held_unmerged", "held_unmerged")
    assert {p10, p9, p8} <= _partitions(g)  # a dry run drops nothing

    run = _retention_cli(tmp_path, g, "--keep-days", "0")
    outcome = {p["partition"]: p["outcome"] for p in run["partitions"] if p["table"] == "trades"}
    assert (outcome[p10], outcome[p9], outcome[p8]) == ("dropped", "held_unmerged", "held_unmerged")
    assert p10 not in _partitions(g) and {p9, p8} <= _partitions(g)
    # tables the deduplicator has not reported on are kept whatever their age
    assert {p["outcome"] for p in run["partitions"] if p["table"] != "trades"} <= {"held_no_ledger"}
    assert run["held"] >= 2 and run["oldest_held_age_s"] >= 8 * 86_400
    with g.conn() as c:
        assert len(_ids_in(c, "trades", d9, d9 + DAY_US)) == 40  # merged and unmerged rows of day -9 survive
        assert len(_ids_in(c, "trades", d8, d8 + DAY_US)) == 10
        log = c.execute("SELECT partition, called_by, action FROM kalshi_retention_log").fetchall()
        assert (p10, "gatherer", "dropped") in log and not {p9, p8} & {row[0] for row in log}  # audited

    _merge_all(dedup_env)  # the deduplicator catches up: now days -9 and -8 are merged too
    again = _retention_cli(tmp_path, g, "--keep-days", "0")
    outcome = {p["partition"]: p["outcome"] for p in again["partitions"] if p["table"] == "trades"}
    assert (outcome[p9], outcome[p8]) == ("dropped", "dropped")
    with dedup_env.prod() as c:  # nothing was lost: production holds every row the gatherer had
        assert c.execute("SELECT count(*) FROM trades").fetchone()[0] == 100


def test_keep_days_keeps_recent_merged_partitions(dedup_env: DedupEnv, tmp_path: Path):
    g = dedup_env.gatherers[0]
    _gatherer_role(g)
    p3, d3 = _old_day_partition(g, 3)
    with g.conn() as c:
        write_trades(c, [trade_row(i, d3 + 1000) for i in range(5)])
    _merge_all(dedup_env)
    kept = _retention_cli(tmp_path, g, "--keep-days", "7")
    assert p3 not in {p["partition"] for p in kept["partitions"]} and p3 in _partitions(g)
    gone = _retention_cli(tmp_path, g, "--keep-days", "2")
    assert {p["partition"]: p["outcome"] for p in gone["partitions"]}[p3] == "dropped"


def test_the_gatherer_role_cannot_drop_anything_itself(dedup_env: DedupEnv):
    g = dedup_env.gatherers[0]
    _gatherer_role(g)
    old, day = _old_day_partition(g, 12)
    with g.conn() as c:
        write_trades(c, [trade_row(1, day + 1000)])
        instance = c.execute("SELECT instance_id::text FROM gatherer_meta").fetchone()[0]
    dsn = g.cluster.dsn(g.db, "gatherer")
    with psycopg.connect(dsn, password=GATHERER_PW, autocommit=True) as c:
        for stmt in (
            f"DROP TABLE {old}",
            f"ALTER TABLE trades DETACH PARTITION {old}",
            f"TRUNCATE {old}",
            f"DELETE FROM {old}",
            "DELETE FROM trades",
            # it cannot forge the watermark the drop function trusts, nor rewrite the audit log ...
            f"INSERT INTO kalshi_merge_ledger VALUES ('trades', '{instance}', '99999999', 'me', now())",
            "DELETE FROM kalshi_retention_log",
            f"SELECT kalshi_record_merged('trades', '{instance}', '2'::xid8)",
            "SELECT * FROM kalshi_time_partitions()",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute(stmt)
        # ... and through its one path, with no watermark recorded, nothing goes
        assert c.execute("SELECT kalshi_drop_merged_partition('trades', %s, %s)", (old, now_us())).fetchone()[0] == (
            "held_no_ledger"
        )
        for table, part in (("trades", "gatherer_meta"), ("gatherer_meta", old), ("trades", "trades")):
            verdict = c.execute("SELECT kalshi_drop_merged_partition(%s, %s, %s)", (table, part, now_us()))
            assert verdict.fetchone()[0] == "not_a_candidate"  # only partitions of registered time-series tables
    assert old in _partitions(g)
    reader = g.cluster.dsn(g.db, "dedup_reader")
    with psycopg.connect(reader, password=os.environ["KT_DEDUP_READER_PW"], autocommit=True) as c:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # the reader records, it never drops
            c.execute("SELECT kalshi_drop_merged_partition('trades', %s, %s)", (old, now_us()))
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="not this database"):
            c.execute("SELECT kalshi_record_merged('trades', gen_random_uuid(), '2'::xid8)")
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="beyond the oldest running"):
            c.execute("SELECT kalshi_record_merged('trades', %s::uuid, '999999999'::xid8)", (instance,))
        assert (
            c.execute("SELECT kalshi_record_merged('sequence_gaps', %s::uuid, '2'::xid8)", (instance,)).fetchone()[0]
            is False
        )  # not a table retention manages


def test_preflight_checks_the_retention_grants_both_ways(dedup_env: DedupEnv):
    from kalshictl.db.roles import check_grants

    g = dedup_env.gatherers[0]
    _gatherer_role(g)
    with g.conn() as c:
        assert all(r["ok"] for r in check_grants(c, g.db, "gatherer")), check_grants(c, g.db, "gatherer")
        c.execute("GRANT EXECUTE ON FUNCTION kalshi_drop_merged_partition(text,text,bigint) TO dedup_reader")
        c.execute("REVOKE EXECUTE ON FUNCTION kalshi_record_merged(text,uuid,xid8) FROM dedup_reader")
        c.execute("GRANT INSERT ON kalshi_merge_ledger TO gatherer")
        problem = {r["role"]: r["problem"] or "" for r in check_grants(c, g.db, "gatherer")}
    assert "can EXECUTE kalshi_drop_merged_partition(text,text,bigint)" in problem["dedup_reader"]
    assert "cannot EXECUTE kalshi_record_merged(text,uuid,xid8)" in problem["dedup_reader"]
    assert "has INSERT on kalshi_merge_ledger" in problem["gatherer"]


def test_a_late_row_being_written_into_an_old_partition_is_never_dropped(dedup_env: DedupEnv):
    g = dedup_env.gatherers[0]
    _gatherer_role(g)
    old, day = _old_day_partition(g, 11)
    with g.conn() as c:
        write_trades(c, [trade_row(i, day + 1000) for i in range(5)])
    _merge_all(dedup_env)  # every row so far is merged: the partition is a candidate
    late = g.conn(autocommit=False)
    try:
        write_trades(late, [trade_row(99, day + 5000)])  # a late row, its transaction still open
        with psycopg.connect(g.cluster.dsn(g.db, "gatherer"), password=GATHERER_PW, autocommit=True) as c:
            verdict = c.execute("SELECT kalshi_drop_merged_partition('trades', %s, %s)", (old, now_us())).fetchone()
            assert verdict[0] == "locked"  # waited 2 s for the writer, dropped nothing
            late.commit()
            verdict = c.execute("SELECT kalshi_drop_merged_partition('trades', %s, %s)", (old, now_us())).fetchone()
            assert verdict[0] == "held_unmerged"  # the committed late row is above the watermark
    finally:
        late.close()
    with g.conn() as c:
        assert c.execute(f"SELECT count(*) FROM {old}").fetchone()[0] == 6
