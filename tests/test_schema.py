"""kalshictl.schema matches the migrated databases: columns of every event table and production's keys."""

import psycopg
import pytest

from kalshictl.db import migrate as mig
from kalshictl.dedup.tables import ALL_TABLES as DEDUP_TABLES
from kalshictl.gatherer.writers import ALL_TABLES as GATHERER_TABLES
from kalshictl.schema import EVENT_COLUMNS, PRODUCTION_KEYS


def _columns(conn, table):
    return {
        r[0]
        for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' AND table_name = %s",
            (table,),
        ).fetchall()
    }


def _primary_key(conn, table):
    return tuple(
        r[0]
        for r in conn.execute(
            "SELECT a.attname FROM pg_index i "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
            "WHERE i.indrelid = %s::regclass AND i.indisprimary ORDER BY array_position(i.indkey, a.attnum)",
            (table,),
        ).fetchall()
    )


@pytest.mark.parametrize("target", ["gatherer", "production"])
def test_schema_module_matches_migrations(pg_cluster, fresh_db, target):
    with psycopg.connect(pg_cluster.dsn(fresh_db), autocommit=True) as conn:
        mig.migrate(conn, target)
        for table, cols in EVENT_COLUMNS.items():
            extra = {"sid", "seq", "txid"} if target == "gatherer" else {"gatherer"}
            assert _columns(conn, table) - extra == set(cols), table
        if target == "production":
            for table, key in PRODUCTION_KEYS.items():
                assert _primary_key(conn, table) == key, table
            for spec in DEDUP_TABLES:
                assert set(spec.prod_columns) <= _columns(conn, spec.name)
        else:
            for spec in GATHERER_TABLES:
                assert set(spec.columns) <= _columns(conn, spec.name), spec.name


def test_time_and_unit_columns_exist_in_production(pg_cluster, fresh_db):
    """Every table's time column, and every column a unit is declared for, is a real production column."""
    from kalshictl.schema import COLUMN_UNITS, LEVEL_COLUMNS, TIME_COLUMN

    with psycopg.connect(pg_cluster.dsn(fresh_db), autocommit=True) as conn:
        mig.migrate(conn, "production")
        columns = {table: _columns(conn, table) for table in TIME_COLUMN}
    for table, column in TIME_COLUMN.items():
        assert column in columns[table], (table, column)
    every = set().union(*columns.values())
    assert set(COLUMN_UNITS) | LEVEL_COLUMNS <= every, (set(COLUMN_UNITS) | LEVEL_COLUMNS) - every
