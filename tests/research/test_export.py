"""export: production -> Parquet on moto's S3 server -> DuckDB, exact; idempotent re-runs; crash safety."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import duckdb
import pyarrow.parquet as pq
import pytest
import yaml

from kalshictl.kalshi.lifecycle_key import digest
from tests.research.conftest import insert_deltas, insert_snapshot

DAY1 = 1_795_132_800_000_000  # 2026-11-20T00:00:00Z in µs
DAY = 86_400_000_000
BUCKET = "research"


def _seed(prod) -> None:
    """Two days of every table, with boundary instants and extreme exact values."""
    with prod.connect() as conn:
        conn.execute(
            "INSERT INTO events (event_ticker, series_ticker, data) VALUES ('KXFED-26DEC', 'KXFED', '{}'),"
            " ('ODD-1', 'ODDSERIES', '{}')"
        )
        conn.execute(
            "INSERT INTO markets (ticker, event_ticker, data) VALUES ('KXFED-26DEC-T4.25', 'KXFED-26DEC', '{}'),"
            " ('ODD-1-X', 'ODD-1', '{}')"
        )
        tickers = ["KXFED-26DEC-T4.25", "ODD-1-X", "NOMETA-1"]
        for i in range(150):
            ts = DAY1 + (i * 1_152_000_000) % (2 * DAY)  # spread over both days
            if i == 0:
                ts = DAY1  # first µs of day 1
            if i == 1:
                ts = DAY1 + DAY - 1  # last µs of day 1
            if i == 2:
                ts = DAY1 + DAY  # first µs of day 2
            t = tickers[i % 3]
            conn.execute(
                "INSERT INTO trades (trade_id, exchange_ts, received_at, ticker, price, size, taker_side, gatherer)"
                " VALUES (%s,%s,%s,%s,%s,%s,%s,%s)",
                (
                    str(uuid.UUID(int=i + 1)),
                    ts,
                    ts + 7,
                    t,
                    [1, 9999, 4213][i % 3],
                    [1, 2**40 + 3, 12345][i % 3],
                    i % 2 == 0,
                    "g1",
                ),
            )
            conn.execute(
                "INSERT INTO tickers (exchange_ts, received_at, ticker, yes_bid, yes_ask, volume, gatherer)"
                " VALUES (%s,%s,%s,%s,%s,%s,%s)",
                (ts, ts + 3, t, 4100 + i, None if i % 5 == 0 else 4300, 10**12 + i, "g2"),
            )
            conn.execute(
                "INSERT INTO lifecycle_events (exchange_ts, received_at, ticker, event_type, payload, digest, gatherer)"
                " VALUES (%s,%s,%s,%s,%s,%s,%s)",
                (ts, ts, t, "activated", json.dumps({"k": i, "s": "ü"}), digest("activated", t, {"k": i}), "g1"),
            )
            insert_snapshot(conn, t, ts, {4100 + i: 1000 + i, 1: 1}, {5600: 1700} if i % 4 else {}, gatherer="g3")
        insert_deltas(
            conn, [(tickers[i % 3], DAY1 + 1000 * (i // 2), i % 2 == 0, 4100, 1 - 2 * (i % 2), 0) for i in range(230)]
        )
        conn.execute(
            "INSERT INTO sequence_gaps (gatherer, instance_id, window_id, channel, sid, tickers, reason, from_ts,"
            " to_ts, detected_at) VALUES ('g1', 'i1', 1, 'orderbook_delta', 2, ARRAY['A', 'B'], 'disconnect', %s, NULL,"
            " %s)",
            (DAY1 + 5, DAY1 + 6),
        )


def _config(prod, tmp_path: Path, endpoint: str, **extra) -> Path:
    data = yaml.safe_load(prod.config.read_text())
    data["exporter"]["s3"] = {"endpoint_url": endpoint, "dest": f"s3://{BUCKET}/kalshi"}
    data["exporter"]["format"] = "parquet"  # these tests cover the plain Parquet files (test_export_iceberg: Iceberg)
    data["exporter"].update(extra)
    path = tmp_path / "export.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _export(cfg: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kalshictl", "export", "--config", str(cfg), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )


def _s3(endpoint: str):
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


def _download(client, prefix: str, dest: Path) -> list[str]:
    keys = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        for obj in page.get("Contents", []):
            keys.append(obj["Key"])
            target = dest / obj["Key"]
            target.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(BUCKET, obj["Key"], str(target))
    return sorted(keys)


def _pg_rows(prod, sql: str) -> list[tuple]:
    with prod.connect() as conn:
        return sorted(conn.execute(sql).fetchall(), key=repr)


def _duck_rows(sql: str) -> list[tuple]:
    return sorted(duckdb.sql(sql).fetchall(), key=repr)


@pytest.fixture
def bucket(s3_endpoint):
    _s3(s3_endpoint).create_bucket(Bucket=BUCKET)
    return s3_endpoint


def test_export_round_trips_exactly_through_s3_into_duckdb(prod, bucket, tmp_path):
    _seed(prod)
    cfg = _config(prod, tmp_path, bucket)
    first = _export(cfg, "--all", "--from", "2026-11-20", "--to", "2026-11-21", "--json")
    assert first.returncode == 0, first.stderr
    out = json.loads(first.stdout)
    assert out["exported"] == 12 and out["skipped"] == 0
    client = _s3(bucket)
    local = tmp_path / "dl"
    keys = _download(client, "kalshi/", local)
    assert "kalshi/table=trades/date=2026-11-20/part-0000.parquet" in keys
    assert "kalshi/table=trades/date=2026-11-20/_manifest.json" in keys and "kalshi/_manifest.json" in keys
    root = local / "kalshi"

    def pq_glob(table: str) -> str:
        return f"read_parquet('{root}/table={table}/*/*.parquet', hive_partitioning=true)"

    # exact row counts and values, table by table (DuckDB reads the files; PostgreSQL is the truth)
    assert _duck_rows(
        f"SELECT trade_id, exchange_ts, received_at, ticker, price, size, taker_side, is_block_trade, gatherer"
        f" FROM {pq_glob('trades')}"
    ) == _pg_rows(
        prod,
        "SELECT trade_id::text, exchange_ts, received_at, ticker, price, size, taker_side, is_block_trade, gatherer"
        " FROM trades",
    )
    assert _duck_rows(f'SELECT * EXCLUDE ("table", "date") FROM {pq_glob("orderbook_deltas")}') == _pg_rows(
        prod, "SELECT * FROM orderbook_deltas"
    )
    assert _duck_rows(f'SELECT * EXCLUDE ("table", "date") FROM {pq_glob("tickers")}') == _pg_rows(
        prod, "SELECT * FROM tickers"
    )
    assert _duck_rows(f"SELECT ticker, payload, exchange_ts FROM {pq_glob('lifecycle_events')}") == _pg_rows(
        prod, "SELECT ticker, payload::text, exchange_ts FROM lifecycle_events"
    )
    snaps_pg = _pg_rows(prod, "SELECT ticker, snapshot_ts, yes_bids, no_asks, best_yes_bid FROM orderbook_snapshots")
    snaps_duck = _duck_rows(
        f"SELECT ticker, snapshot_ts, [[l.price::BIGINT, l.size] for l in yes_bids],"
        f" [[l.price::BIGINT, l.size] for l in no_asks], best_yes_bid FROM {pq_glob('orderbook_snapshots')}"
    )
    assert snaps_duck == snaps_pg and len(snaps_pg) == 150
    assert _duck_rows(f"SELECT gatherer, reason, to_ts FROM {pq_glob('sequence_gaps')}") == [("g1", "disconnect", None)]
    assert _duck_rows(f"SELECT tickers FROM {pq_glob('sequence_gaps')}") == [(["A", "B"],)]
    digests = _duck_rows(f"SELECT digest FROM {pq_glob('lifecycle_events')}")
    assert digests and all(isinstance(d, bytes) and len(d) == 32 for (d,) in digests)
    # day partitioning: boundary instants land in their own UTC day
    per_day = dict(duckdb.sql(f"SELECT date::VARCHAR, count(*) FROM {pq_glob('trades')} GROUP BY 1").fetchall())
    assert per_day == dict(
        _pg_rows(
            prod,
            f"SELECT CASE WHEN exchange_ts < {DAY1 + DAY} THEN '2026-11-20' ELSE '2026-11-21' END, count(*)"
            " FROM trades GROUP BY 1",
        )
    )
    assert (
        duckdb.sql(
            f"SELECT max(exchange_ts) FROM read_parquet('{root}/table=trades/date=2026-11-20/*.parquet')"
        ).fetchall()[0][0]
        == DAY1 + DAY - 1
    )
    # manifest: rows, bytes and sha256 per file match what is stored; schema states units and exact int types
    manifest = json.loads((root / "table=trades/date=2026-11-20/_manifest.json").read_text())
    assert manifest["complete"] and manifest["final"] and manifest["rows"] == per_day["2026-11-20"]
    for f in manifest["files"]:
        blob = (local / f["key"]).read_bytes()
        assert len(blob) == f["bytes"] and hashlib.sha256(blob).hexdigest() == f["sha256"]
        assert pq.read_metadata(local / f["key"]).num_rows == f["rows"]
    schema = pq.read_schema(root / "table=trades/date=2026-11-20/part-0000.parquet")
    assert str(schema.field("price").type) == "int32" and str(schema.field("size").type) == "int64"
    assert schema.field("price").metadata[b"kalshictl.unit"] == b"1e-4 USD"
    assert schema.field("size").metadata[b"kalshictl.unit"] == b"1e-2 contracts"
    assert schema.field("exchange_ts").metadata[b"kalshictl.unit"] == b"us since epoch"

    # a re-run skips every complete partition and rewrites nothing
    etags = {k: client.head_object(Bucket=BUCKET, Key=k)["ETag"] for k in keys if k.endswith(".parquet")}
    again = _export(cfg, "--all", "--from", "2026-11-20", "--to", "2026-11-21", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["skipped"] == 12
    assert etags == {k: client.head_object(Bucket=BUCKET, Key=k)["ETag"] for k in etags}


def test_export_crash_leaves_no_partial_partition_and_rerun_completes(prod, bucket, tmp_path):
    _seed(prod)
    cfg = _config(prod, tmp_path, bucket, rows_per_file=40, batch_rows=25)
    client = _s3(bucket)
    days = ["--from", "2026-11-20", "--to", "2026-11-21"]
    # trades day 1 (~75 rows, 2 parts) completes; deltas day 1 (230 rows, 6 parts) dies after its 2nd part: 4 uploads
    crash_tmp = tmp_path / "crash-tmp"  # a killed export cannot remove its local work directory: keep it here
    crash_tmp.mkdir()
    crash = _export(
        cfg,
        "--table",
        "trades",
        "--table",
        "orderbook_deltas",
        *days,
        "--json",
        env={"KALSHICTL_EXPORT_CRASH_AFTER_PARTS": "5", "TMPDIR": str(crash_tmp)},
    )
    assert crash.returncode == 70, crash.stderr
    deltas_day = "kalshi/table=orderbook_deltas/date=2026-11-20/"
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=deltas_day).get("Contents", [])
    assert listed and not any(o["Key"].endswith("_manifest.json") for o in listed)  # parts, but no commit record
    manifests = [
        o["Key"]
        for o in client.list_objects_v2(Bucket=BUCKET, Prefix="kalshi/").get("Contents", [])
        if o["Key"].endswith("_manifest.json")
    ]
    for key in manifests:  # whatever manifests exist list only complete, existing files
        m = json.loads(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())
        assert not key.startswith(deltas_day)
        for f in m.get("files", []):
            assert client.head_object(Bucket=BUCKET, Key=f["key"])["ContentLength"] == f["bytes"]

    rerun = _export(cfg, "--table", "trades", "--table", "orderbook_deltas", *days, "--json")
    assert rerun.returncode == 0, rerun.stderr
    res = {(p["table"], p["date"]): p["status"] for p in json.loads(rerun.stdout)["partitions"]}
    assert res[("trades", "2026-11-20")] == "skipped"
    assert res[("orderbook_deltas", "2026-11-20")] == "exported"
    local = tmp_path / "dl"
    _download(client, "kalshi/", local)
    m = json.loads((local / deltas_day / "_manifest.json").read_text())
    assert m["rows"] == 230 and len(m["files"]) == 6 and all(f["rows"] <= 40 for f in m["files"])
    files = sorted(str(local / f["key"]) for f in m["files"])
    assert sorted(str(p) for p in (local / deltas_day).glob("*.parquet")) == files  # no stray parts
    got = _duck_rows(f"SELECT * FROM read_parquet({files!r}, hive_partitioning=false)")
    assert got == _pg_rows(prod, "SELECT * FROM orderbook_deltas")


def test_export_by_series(prod, bucket, tmp_path):
    _seed(prod)
    cfg = _config(prod, tmp_path, bucket)
    proc = _export(cfg, "--table", "trades", "--from", "2026-11-20", "--to", "2026-11-20", "--by-series", "--json")
    assert proc.returncode == 0, proc.stderr
    local = tmp_path / "dl"
    keys = _download(_s3(bucket), "kalshi/table=trades/", local)
    series = {k.split("series=")[1].split("/")[0] for k in keys if "series=" in k}
    assert series == {"KXFED", "ODDSERIES", "NOMETA"}  # markets/events join, else the ticker prefix
    rows = duckdb.sql(
        f"SELECT series, ticker, count(*) FROM read_parquet('{local}/kalshi/table=trades/*/*/*.parquet',"
        " hive_partitioning=true) GROUP BY ALL ORDER BY 1"
    ).fetchall()
    assert [r[:2] for r in rows] == [("KXFED", "KXFED-26DEC-T4.25"), ("NOMETA", "NOMETA-1"), ("ODDSERIES", "ODD-1-X")]
    assert (
        sum(r[2] for r in rows) == _pg_rows(prod, f"SELECT count(*) FROM trades WHERE exchange_ts < {DAY1 + DAY}")[0][0]
    )
