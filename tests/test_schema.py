"""The table catalogue (kalshictl/schema.py) matches the migrated databases: every table's columns with their SQL
types, the gatherer-only extras, production's keys, and each row NamedTuple's fields."""

import psycopg
import pytest

from kalshictl.db import migrate as mig
from kalshictl.schema import EVENT_TABLES, TABLES, Table


def _columns(conn, table) -> dict[str, str]:
    """name -> SQL type, spelt as the migrations spell it."""
    rows = conn.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a"
        " WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped",
        (table,),
    ).fetchall()
    return {name: typ.replace("character varying", "varchar") for name, typ in rows}


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


def _declared(spec: Table, target: str) -> dict[str, str]:
    cols = [*spec.lead, *spec.columns]
    cols += spec.extras if target == "gatherer" else [spec.find("gatherer")]
    return {c.name: c.sql for c in cols}


@pytest.mark.parametrize("target", ["gatherer", "production"])
def test_catalogue_matches_migrations(pg_cluster, fresh_db, target):
    with psycopg.connect(pg_cluster.dsn(fresh_db), autocommit=True) as conn:
        mig.migrate(conn, target)
        for spec in EVENT_TABLES:
            actual = _columns(conn, spec.name)
            undescribed = {"txid"} if target == "gatherer" else set()
            if spec.name == "sequence_gaps":
                # each database's own serial number of a window (never in a row); production's copy of the window
                # table also has a txid column (migrations/production/010_gap_windows.sql), unused there
                undescribed |= {"gap_id", "txid"}
            assert {n: t for n, t in actual.items() if n not in undescribed} == _declared(spec, target), spec.name
            if target == "production":
                assert _primary_key(conn, spec.name) == spec.key, spec.name


def test_rows_and_facts_are_consistent():
    """Each row NamedTuple has the gatherer row's fields; the time and clock columns and keys are real columns."""
    for spec in EVENT_TABLES:
        assert spec.row._fields == spec.gatherer_columns, spec.name
        assert spec.time_column in spec.names and spec.clock in spec.gatherer_columns, spec.name
        assert set(spec.key) <= set(spec.production_columns), spec.name
        assert set(spec.sized) <= set(spec.gatherer_columns), spec.name
        assert spec.writers >= 1
        for col in (*spec.columns, *spec.extras):
            assert col.doc, (spec.name, col.name)
    assert list(TABLES) == [t.name for t in EVENT_TABLES]
