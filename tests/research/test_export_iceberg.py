"""Iceberg export: production -> Iceberg tables on moto's S3 server, catalog in production's `iceberg` schema; read back
with pyiceberg and Polars; one snapshot per export of a day; verification equal on both sides."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal

import boto3
import polars as pl
import pytest
import yaml

from kalshictl.config import load_settings
from kalshictl.errors import KalshiCtlError
from kalshictl.research import iceberg_types as types
from kalshictl.research.iceberg import IcebergExporter
from tests.research.test_export import BUCKET, DAY, DAY1, _export, _seed

D1, D2 = date(2026, 11, 20), date(2026, 11, 21)
EVENT_TABLES = [t for t in types.tables() if types.time_column(t)]


def _config(prod, tmp_path, endpoint: str, **iceberg) -> object:
    data = yaml.safe_load(prod.config.read_text())
    data["exporter"]["s3"] = {"endpoint_url": endpoint, "dest": f"s3://{BUCKET}/warehouse"}
    data["exporter"]["iceberg"] = iceberg
    path = tmp_path / "export.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(autouse=True)
def _polars_planner(monkeypatch):
    monkeypatch.setenv("POLARS_ICEBERG_PLANNER", "pyiceberg")  # the optional polars_iceberg planner is not installed


@pytest.fixture
def bucket(s3_endpoint):
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=BUCKET)
    return s3_endpoint


def _seed_all(prod) -> None:
    _seed(prod)
    with prod.connect() as conn:
        conn.execute("INSERT INTO series (ticker, title, data) VALUES ('KXFED', 'Fed', '{\"a\": 1}')")


def _pg_count(prod, table: str, day: date | None) -> int:
    with prod.connect() as conn:
        tcol = types.time_column(table)
        if tcol is None:
            return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        start = DAY1 + (day - D1).days * DAY
        return conn.execute(
            f"SELECT count(*) FROM {table} WHERE {tcol} >= %s AND {tcol} < %s", (start, start + DAY)
        ).fetchone()[0]


def _polars(tbl, endpoint: str) -> pl.DataFrame:
    opts = {
        "aws_endpoint_url": endpoint,
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
        "aws_region": "us-east-1",
        "aws_allow_http": "true",
    }
    return pl.scan_iceberg(tbl, storage_options=opts).collect()


def test_iceberg_export_round_trips_every_table_and_reexport_is_one_snapshot(prod, bucket, tmp_path):
    _seed_all(prod)
    settings = load_settings(_config(prod, tmp_path, bucket)).require("exporter")
    with IcebergExporter.open(settings) as exp:
        results = {}
        for table in types.tables():
            for day in (D1, D2) if types.time_column(table) else (None,):
                res = exp.export_table_day(table, day)
                results[(table, day)] = res
                assert res.rows == _pg_count(prod, table, day)
                assert res.metadata_location.startswith(f"s3://{BUCKET}/warehouse/kalshi/{table}/metadata/")
                check = exp.verify_table_day(table, day)
                assert check.ok and check.production_rows == res.rows and check.iceberg_checksum == res.checksum
        assert results[("trades", D1)].rows > 0 and results[("series", None)].rows == 1

        for table in types.tables():
            tbl = exp.catalog.load_table(("kalshi", table))
            arrow = tbl.scan().to_arrow()
            frame = _polars(tbl, bucket)
            assert arrow.num_rows == frame.height == sum(r.rows for (t, _), r in results.items() if t == table)
            tcol = types.time_column(table)
            if tcol:
                assert str(tbl.schema().find_field(tcol).field_type) == "timestamptz"
                assert str(arrow.schema.field(tcol).type) == "timestamp[us, tz=UTC]"
                assert frame.schema[tcol] == pl.Datetime("us", "UTC")
                assert [str(f.transform) for f in tbl.spec().fields] == ["day"]
                per_day = frame.group_by(pl.col(tcol).dt.date()).len()
                assert dict(per_day.iter_rows()) == {
                    d: _pg_count(prod, table, d) for d in (D1, D2) if _pg_count(prod, table, d)
                }
            for field in tbl.schema().fields:
                assert field.doc, f"{table}.{field.name} has no doc"

        # decimals are production's integers / 10^4 and / 10^2, exactly; sides are yes/no
        trades = exp.catalog.load_table(("kalshi", "trades")).scan().to_arrow()
        assert str(trades.schema.field("price").type) == "decimal128(10, 4)"
        assert str(trades.schema.field("size").type) == "decimal128(19, 2)"
        with prod.connect() as conn:
            pg = {
                r[0]: r[1:]
                for r in conn.execute("SELECT trade_id::text, price, size, taker_side, exchange_ts FROM trades")
            }
        got = {r["trade_id"]: r for r in trades.to_pylist()}
        assert got.keys() == pg.keys()
        for tid, (price, size, taker_yes, ts) in pg.items():
            row = got[tid]
            assert row["price"] == Decimal(price) / 10_000 and row["size"] == Decimal(size) / 100
            assert row["taker_side"] == ("yes" if taker_yes else "no")
            assert int(row["exchange_ts"].timestamp() * 1_000_000) // 1 == pytest.approx(ts, abs=1)
        assert max(got.values(), key=lambda r: r["size"])["size"] == Decimal(2**40 + 3) / 100
        snaps = exp.catalog.load_table(("kalshi", "orderbook_snapshots")).scan().to_arrow().to_pylist()
        level = snaps[0]["yes_bids"][0]
        assert isinstance(level["price"], Decimal) and level["price"].as_tuple().exponent == -4
        deltas = _polars(exp.catalog.load_table(("kalshi", "orderbook_deltas")), bucket)
        assert set(deltas["side"].unique()) == {"yes", "no"}
        assert deltas.schema["price"] == pl.Decimal(10, 4)

        # a second export of a day: same counts, exactly one more snapshot, old snapshot still readable
        tbl = exp.catalog.load_table(("kalshi", "trades"))
        before, previous = len(tbl.snapshots()), tbl.current_snapshot().snapshot_id
        first = results[("trades", D1)]
        again = exp.export_table_day("trades", D1)
        tbl = exp.catalog.load_table(("kalshi", "trades"))
        assert len(tbl.snapshots()) == before + 1 and again.snapshot_id != first.snapshot_id
        assert tbl.current_snapshot().summary.operation.value == "overwrite"
        assert again.rows == first.rows and again.checksum == first.checksum
        assert tbl.scan().to_arrow().num_rows == results[("trades", D1)].rows + results[("trades", D2)].rows
        assert tbl.scan(snapshot_id=previous).to_arrow().num_rows == tbl.scan().to_arrow().num_rows
        assert exp.verify_table_day("trades", D1).ok

        # a day with no rows commits an empty day (one snapshot, nothing else changes) and verifies
        empty = exp.export_table_day("trades", date(2026, 11, 25))
        assert empty.rows == 0 and exp.verify_table_day("trades", date(2026, 11, 25)).ok
        assert (
            exp.catalog.load_table(("kalshi", "trades")).scan().to_arrow().num_rows
            == again.rows + results[("trades", D2)].rows
        )

        # a changed production row makes verification fail (the checksum sees content, not only counts)
        with prod.connect() as conn:
            conn.execute(f"UPDATE trades SET price = price + 1 WHERE exchange_ts = {DAY1}")
        bad = exp.verify_table_day("trades", D1)
        assert not bad.ok and bad.production_rows == bad.iceberg_rows


def test_catalog_lives_in_its_own_schema_and_exporter_stays_read_only(prod, bucket, tmp_path):
    _seed_all(prod)
    settings = load_settings(_config(prod, tmp_path, bucket)).require("exporter")
    with IcebergExporter.open(settings) as exp:
        exp.export_table_day("trades", D1)
        with pytest.raises(Exception, match="permission denied"):
            exp.conn.execute("INSERT INTO events (event_ticker, data) VALUES ('X', '{}')")
    with prod.connect() as conn:
        where = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables WHERE table_name LIKE 'iceberg%%'"
        ).fetchall()
        assert sorted(where) == [("iceberg", "iceberg_namespace_properties"), ("iceberg", "iceberg_tables")]
        assert conn.execute("SELECT count(*) FROM iceberg.iceberg_tables").fetchone()[0] == 1
        conn.execute("DROP SCHEMA iceberg CASCADE")  # as if init-db had not run: a clear error naming the key
    with pytest.raises(KalshiCtlError, match="exporter.iceberg.catalog_schema: schema 'iceberg' does not exist"):
        IcebergExporter.open(settings)


def test_cli_export_iceberg_json_lists_metadata_and_rows_per_day(prod, bucket, tmp_path):
    _seed_all(prod)
    cfg = _config(prod, tmp_path, bucket, sqlite_path=str(tmp_path / "catalog.db"))
    proc = _export(cfg, "--all", "--from", "2026-11-20", "--to", "2026-11-21", "--verify", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["format"] == "iceberg"
    assert all(all(t["verified"].values()) for t in out["tables"].values())
    tables = out["tables"]
    assert set(tables) == set(types.tables())
    assert tables["trades"]["rows_per_day"] == {
        "2026-11-20": _pg_count(prod, "trades", D1),
        "2026-11-21": _pg_count(prod, "trades", D2),
    }
    assert tables["markets"]["rows_per_day"] == {"all": 2}
    assert all(t["metadata_location"].startswith(f"s3://{BUCKET}/warehouse/") for t in tables.values())
    assert (tmp_path / "catalog.db").exists()


def test_cli_refuses_options_of_the_other_format(prod, tmp_path):
    cfg = _config(prod, tmp_path, "http://127.0.0.1:9", sqlite_path=str(tmp_path / "catalog.db"))
    proc = _export(cfg, "--table", "trades", "--from", "2026-11-20", "--to", "2026-11-20", "--by-series")
    assert proc.returncode == 2 and "--by-series and --force apply to --format parquet" in proc.stderr
    proc = _export(cfg, "--table", "nope", "--from", "2026-11-20", "--to", "2026-11-20")
    assert proc.returncode == 2 and "unknown table 'nope'" in proc.stderr
    proc = _export(
        cfg, "--table", "trades", "--format", "parquet", "--verify", "--from", "2026-11-20", "--to", "2026-11-20"
    )
    assert proc.returncode == 2 and "--verify applies to --format iceberg" in proc.stderr


def test_crash_before_commit_leaves_the_day_as_it_was_and_a_rerun_replaces_it(prod, bucket, tmp_path):
    _seed_all(prod)
    cfg = _config(prod, tmp_path, bucket)
    settings = load_settings(cfg).require("exporter")
    with IcebergExporter.open(settings) as exp:
        first = exp.export_table_day("trades", D1)
    with prod.connect() as conn:
        conn.execute(f"DELETE FROM trades WHERE exchange_ts < {DAY1 + DAY // 2}")
    day = ("--table", "trades", "--from", "2026-11-20", "--to", "2026-11-20", "--json")
    crash = _export(cfg, *day, env={"KALSHICTL_EXPORT_CRASH_BEFORE_COMMIT": "trades"})
    assert crash.returncode == 70, crash.stderr
    with IcebergExporter.open(settings) as exp:
        tbl = exp.catalog.load_table(("kalshi", "trades"))
        assert len(tbl.snapshots()) == 1 and tbl.current_snapshot().snapshot_id == first.snapshot_id
        assert tbl.scan().to_arrow().num_rows == first.rows  # readers still see the whole old day
    rerun = _export(cfg, *day)
    assert rerun.returncode == 0, rerun.stderr
    with IcebergExporter.open(settings) as exp:
        tbl = exp.catalog.load_table(("kalshi", "trades"))
        assert len(tbl.snapshots()) == 2
        assert tbl.scan().to_arrow().num_rows == _pg_count(prod, "trades", D1) < first.rows
        assert exp.verify_table_day("trades", D1).ok
