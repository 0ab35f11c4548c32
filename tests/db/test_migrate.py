"""Migrations on a real PostgreSQL: both schemas build, a second run changes nothing, concurrency is safe."""

import json
import subprocess
import sys
import threading
import time

import psycopg
import pytest

from kalshictl.db import migrate as mig
from tests.helpers import write_config

GATHERER_TABLES = {
    "trades",
    "orderbook_deltas",
    "orderbook_snapshots",
    "tickers",
    "lifecycle_events",
    "sequence_gaps",
    "gatherer_meta",
}
PRODUCTION_TABLES = {
    "trades",
    "orderbook_deltas",
    "orderbook_snapshots",
    "tickers",
    "lifecycle_events",
    "sequence_gaps",
    "series",
    "events",
    "markets",
    "sync_cursors",
}


def _tables(dsn):
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE nspname = 'public' AND relkind IN ('r','p') AND NOT relispartition"
        ).fetchall()
    return {r[0] for r in rows}


@pytest.mark.parametrize(("target", "tables"), [("gatherer", GATHERER_TABLES), ("production", PRODUCTION_TABLES)])
def test_migrate_builds_and_is_idempotent(pg_cluster, fresh_db, tmp_path, target, tables):
    section = {"dsn": pg_cluster.dsn(fresh_db, "postgres"), "allow_insecure": True}
    if target == "gatherer":
        cfg = {"gatherer": {"database": section}}
    else:
        cfg = {"deduplicator": {"production": section, "gatherers": [{"name": "g1", "database": section}]}}
    path = write_config(tmp_path / "c.yaml", cfg)
    run = [sys.executable, "-m", "kalshictl", "migrate", "--config", str(path), "--json"]
    first = subprocess.run(run, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    out = json.loads(first.stdout)
    assert out["flavor"] == "partitioned"  # no timescaledb on this machine
    assert [p["version"] for p in out["applied_now"]] == [m.version for m in mig.load_migrations(target)]
    assert tables <= _tables(pg_cluster.dsn(fresh_db))
    with psycopg.connect(pg_cluster.dsn(fresh_db)) as conn:
        schema_before = conn.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid=c.relnamespace WHERE nspname='public'"
        ).fetchone()[0]
    second = subprocess.run(run, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["applied_now"] == []
    with psycopg.connect(pg_cluster.dsn(fresh_db)) as conn:
        schema_after = conn.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid=c.relnamespace WHERE nspname='public'"
        ).fetchone()[0]
    assert schema_after == schema_before
    status = subprocess.run(
        [sys.executable, "-m", "kalshictl", "migrate", "status", "--config", str(path), "--json"],
        capture_output=True,
        text=True,
    )
    assert json.loads(status.stdout)["current"] is True


def test_partitions_route_rows_and_queries_match(pg_cluster, fresh_db):
    dsn = pg_cluster.dsn(fresh_db)
    with psycopg.connect(dsn, autocommit=True) as conn:
        mig.migrate(conn, "gatherer")
        now_us = int(time.time() * 1e6)
        conn.execute(
            "INSERT INTO orderbook_deltas (exchange_ts, received_at, ticker, side, price, size_delta) "
            "VALUES (%s, %s, 'M1', true, 4100, 1000), (%s, %s, 'M1', true, 4100, 1000)",
            (now_us, now_us, 1_000_000, 1_000_000),  # the second is from 1970: lands in the default partition
        )
        parts = dict(
            conn.execute("SELECT tableoid::regclass::text, count(*) FROM orderbook_deltas GROUP BY 1").fetchall()
        )
        assert parts.get("orderbook_deltas_default") == 1
        assert sum(parts.values()) == 2
        assert any(name.startswith("orderbook_deltas_p") for name in parts)
        # every row carries the writing transaction's id
        assert conn.execute("SELECT count(*) FROM orderbook_deltas WHERE txid IS NOT NULL").fetchone()[0] == 2
        assert mig.ensure_partitions(conn) == 0  # already created ahead


def test_concurrent_migrations_are_safe(pg_cluster, fresh_db):
    dsn = pg_cluster.dsn(fresh_db)
    errors = []

    def run():
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                mig.migrate(conn, "production")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM kalshi_schema_version").fetchone()[0] == len(
            mig.load_migrations("production")
        )


def test_render_flavors():
    tpl = "CREATE TABLE t (ts bigint) {{partition:ts}};\n{{timeseries:t,ts,3600000000}}"
    hyper = mig.render(tpl, "hypertable")
    assert "create_hypertable('t', 'ts', chunk_time_interval => 3600000000" in hyper
    assert "PARTITION BY" not in hyper
    plain = mig.render(tpl, "partitioned")
    assert "PARTITION BY RANGE (ts)" in plain and "t_default PARTITION OF t DEFAULT" in plain
