"""Export benchmark: Iceberg export rows/s (production -> typed Arrow -> Parquet data files on S3 -> one snapshot)
beside the pyarrow Parquet write ceiling of the same rows in the same run (the Iceberg-typed Arrow table written to a
local file, nothing else), the plain Parquet export (``--format parquet``) as a baseline, verification rows/s, and
bytes per row of the data files. S3 is moto's server (real HTTP on loopback); production and the catalog are an
embedded PostgreSQL.

Prints one summary line per figure. Exits non-zero only if a run was invalid (counts or verification wrong).
Usage: python bench/bench_export.py [--rows 200000]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import uuid
from datetime import date
from pathlib import Path

import boto3
import psycopg
import pyarrow.parquet as pq

from kalshictl.config import ExportSettings
from kalshictl.db.embedded import PostgresCluster, free_port
from kalshictl.db.migrate import migrate
from kalshictl.db.roles import ROLES, ensure_role
from kalshictl.research import iceberg_types as types
from kalshictl.research.export import ExportJob, run_export, s3_client
from kalshictl.research.iceberg import IcebergExporter, production_columns, production_query, read_production

PW = "bench-pw"
DAY = date(2026, 11, 20)
DAY_US = 1_795_132_800_000_000  # 2026-11-20T00:00:00Z


def seed(conn: psycopg.Connection, n: int) -> None:
    """n trades and n order-book deltas spread over one UTC day, 500 markets."""
    step = 86_400_000_000 // n
    with conn.cursor() as cur:
        with cur.copy("COPY trades (trade_id, exchange_ts, received_at, ticker, price, size, taker_side, gatherer)"
                      " FROM STDIN") as cp:  # fmt: skip
            for i in range(n):
                ts = DAY_US + i * step
                cp.write_row((uuid.UUID(int=i + 1), ts, ts + 900, f"KXBENCH-{i % 500}", 100 + i % 9800,
                              100 * (1 + i % 250), i % 2 == 0, "g1"))  # fmt: skip
        with cur.copy("COPY orderbook_deltas (exchange_ts, received_at, ticker, side, price, size_delta, occurrence,"
                      " gatherer) FROM STDIN") as cp:  # fmt: skip
            for i in range(n):
                ts = DAY_US + i * step
                cp.write_row((ts, ts + 900, f"KXBENCH-{i % 500}", i % 3 == 0, 100 + i % 9800,
                              (1 - 2 * (i % 2)) * 100 * (1 + i % 40), 0, "g1"))  # fmt: skip


def ceiling(exp: IcebergExporter, table: str, workdir: Path) -> tuple[float, int]:
    """(rows/s, bytes) of pyarrow writing the same rows, already in the Iceberg types, to one local file with the
    tables' Parquet settings (research/iceberg.py WRITE_PROPERTIES)."""
    cols = production_columns(exp.conn, table)
    sql, params = production_query(table, cols, DAY)  # the export's own query and row order
    rows = exp.conn.execute(sql, params).fetchall()
    arrow = types.to_iceberg_arrow(rows, cols)
    path = workdir / f"{table}.parquet"
    start = time.perf_counter()
    pq.write_table(
        arrow,
        path,
        compression="zstd",
        compression_level=3,
        dictionary_pagesize_limit=128 << 10,
        store_decimal_as_integer=True,
    )  # fmt: skip  (the Iceberg tables' Parquet settings)
    return arrow.num_rows / (time.perf_counter() - start), path.stat().st_size


def read_rate(exp: IcebergExporter, table: str) -> float:
    """rows/s of reading the table-day from production alone (the export's query and server-side cursor)."""
    cols = production_columns(exp.conn, table)
    start, n = time.perf_counter(), 0
    with exp.conn.transaction():
        for batch in read_production(exp.conn, table, cols, DAY, exp.settings.batch_rows):
            n += len(batch)
    return n / (time.perf_counter() - start)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000, help="rows per table (trades, orderbook_deltas)")
    args = ap.parse_args()
    from moto.server import ThreadedMotoServer

    env = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
    os.environ.update(env, KB_PW=PW)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="bench")
    ok = True
    try:
        with PostgresCluster() as cluster, tempfile.TemporaryDirectory(prefix="kalshictl-bench-export-") as tmp:
            cluster.create_database("prod")
            with psycopg.connect(cluster.dsn("prod"), autocommit=True) as conn:
                migrate(conn, "production")
                ensure_role(conn, next(r for r in ROLES if r.name == "exporter"), PW, "prod")
                seed(conn, args.rows)
                conn.execute("VACUUM ANALYZE")
            settings = ExportSettings.model_validate(
                {
                    "production": {
                        "dsn": cluster.dsn("prod", "exporter"),
                        "password": "env:KB_PW",
                        "allow_insecure": True,
                    },
                    "s3": {"endpoint_url": endpoint, "dest": "s3://bench/warehouse"},
                }
            )
            with IcebergExporter.open(settings) as exp:
                for table in ("trades", "orderbook_deltas"):
                    cap, cap_bytes = ceiling(exp, table, Path(tmp))
                    read = read_rate(exp, table)
                    start = time.perf_counter()
                    res = exp.export_table_day(table, DAY)
                    took = time.perf_counter() - start
                    summary = exp.catalog.load_table(("kalshi", table)).current_snapshot().summary
                    data_bytes = int(summary["added-files-size"])
                    start = time.perf_counter()
                    check = exp.verify_table_day(table, DAY)
                    verify_s = time.perf_counter() - start
                    again = time.perf_counter()
                    exp.export_table_day(table, DAY)
                    reexport_s = time.perf_counter() - again
                    if res.rows != args.rows or not check.ok:
                        print(f"INVALID {table}: rows {res.rows} != {args.rows} or verification {check.as_dict()}")
                        ok = False
                    print(f"iceberg export {table}: {res.rows / took:,.0f} rows/s ({res.rows:,} rows in {took:.2f}s"
                        f" incl."
                        f" creating the table,"
                          f" re-export {res.rows / reexport_s:,.0f} rows/s); ceiling pyarrow Parquet write of the"
                          f" same rows {cap:,.0f} rows/s = {res.rows / took / cap:.1%} of it; reading production alone"
                          f" {read:,.0f} rows/s")  # fmt: skip
                    print(
                        f"iceberg data files {table}: {data_bytes / res.rows:.1f} bytes/row"
                        f" (ceiling's single file {cap_bytes / res.rows:.1f} bytes/row)"
                    )
                    print(
                        f"iceberg verify {table}: {check.production_rows / verify_s:,.0f} rows/s (production +"
                        " Iceberg read back, count + checksum)"
                    )
            # baseline: the plain Parquet export of the same rows (production integers, manifests)
            with psycopg.connect(**_kwargs(settings), autocommit=True) as conn:
                client = s3_client(settings.s3)
                for table in ("trades", "orderbook_deltas"):
                    job = ExportJob([table], [DAY], "bench", "parquet", force=True)
                    start = time.perf_counter()
                    [part] = run_export(conn, client, settings, job)
                    took = time.perf_counter() - start
                    print(
                        f"baseline plain Parquet export {table}: {part.rows / took:,.0f} rows/s,"
                        f" {part.bytes / max(part.rows, 1):.1f} bytes/row (integers)"
                    )
    finally:
        server.stop()
    return 0 if ok else 1


def _kwargs(settings: ExportSettings) -> dict:
    from kalshictl.db.connect import connect_kwargs

    return connect_kwargs(settings.production)


if __name__ == "__main__":
    sys.exit(main())
