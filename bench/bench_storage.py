"""Storage benchmark: bytes per row of each event table in each tier, measured on real databases (docs/capacity.md).

* gatherer: N rows per table written by binary COPY into a migrated gatherer database (the gatherer's columns: its
  ``sid``/``seq`` and the ``txid`` watermark), in time order as a gatherer receives them;
* production: the same rows merged by the real deduplicator loop (kalshictl/dedup/loops.py) into a migrated
  production database;
* Parquet: the production rows exported with the exporter's own schema, query and compression
  (kalshictl/research/export.py; zstd), written to a local file instead of S3.

Per table and tier it prints bytes/row including indexes and TOAST (partition sizes after loading, less the empty
tables' size), beside two figures from the same run: the heap alone (the same table, no indexes) and the floor, the
average width of the row's values (``pg_column_size``: no page, tuple header or index overhead). Then the projection
at the message rates of ``--rates`` for a mix of messages (``--mix``). The rows are synthetic but shaped like the
exchange's: tickers like ``KXHIGHNY-26DEC06-B45.5``, a Zipf-like market popularity, order books of ``--levels``
price levels per side. Exits non-zero only if a run was invalid (production counts wrong).

Usage: python bench/bench_storage.py [--rows 100000] [--levels 10] [--rates 2000,20000] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.bench_dedup import PW, make_db
from kalshictl import schema
from kalshictl.config import DedupSettings
from kalshictl.db.embedded import PostgresCluster
from kalshictl.dedup.loops import SyncLoop
from kalshictl.dedup.metrics import DedupMetrics

TABLES = ("orderbook_deltas", "tickers", "trades", "orderbook_snapshots")
# Share of the message stream each table's rows make (deltas dominate; each trade also moves a ticker; snapshots are
# the subscription snapshots plus the REST poller's). Override with --mix.
DEFAULT_MIX = {"orderbook_deltas": 0.85, "tickers": 0.10, "trades": 0.04, "orderbook_snapshots": 0.01}
SERIES = ("KXHIGHNY", "KXFEDDECISION", "KXBTCD", "KXNBAGAME", "KXINXU", "KXCPIYOY", "KXMVESPORTSMULTIGAMEEXTENDED")


def tickers(n: int, rng: random.Random) -> list[str]:
    out = []
    for i in range(n):
        s = SERIES[i % len(SERIES)]
        out.append(f"{s}-26DEC{1 + i % 28:02d}-{rng.choice('BT')}{rng.randint(10, 999)}.{rng.randint(0, 9)}")
    return out


def levels(rng: random.Random, n: int) -> list[list[int]]:
    start = rng.randint(1, 40) * 100
    return [[start + i * 100, rng.randint(1, 5000) * 100] for i in range(n)]


def rows_for(table: str, n: int, names: list[str], base_us: int, depth: int, rng: random.Random) -> list[tuple]:
    """``n`` rows of ``table`` in time order (1 ms apart), gatherer columns + sid/seq where the table has them."""
    weights = [1 / (i + 1) for i in range(len(names))]
    picks = rng.choices(names, weights, k=n)
    out = []
    for i, t in enumerate(picks):
        ts = base_us + i * 1000 + rng.randint(0, 999)
        rec = ts + rng.randint(2_000, 40_000)
        sid = 1 + hash(t) % 150
        if table == "orderbook_deltas":
            size = rng.randint(1, 2000) * 100 * rng.choice((1, -1))
            out.append((ts, rec, t, rng.random() < 0.5, rng.randint(1, 99) * 100, size, 0, i + 1, sid))
        elif table == "tickers":
            bid = rng.randint(1, 98) * 100
            vol = rng.randint(0, 10**7) * 100
            out.append(
                (ts, rec, t, bid, bid + 100, bid, vol, vol // 3, vol // 100, vol // 300, 5000, 7000, 100, "ws", 0, sid)
            )
        elif table == "trades":
            out.append((uuid.uuid4(), ts, rec, t, rng.randint(1, 99) * 100, rng.randint(1, 500) * 100,
                        rng.random() < 0.5, False, "ws", sid))  # fmt: skip
        else:
            yb, nb = levels(rng, depth), levels(rng, depth)
            ya = [[10_000 - p, s] for p, s in reversed(nb)]
            na = [[10_000 - p, s] for p, s in reversed(yb)]
            rec = ts + 20_000  # snapshot_ts is in the key: strictly increasing, as one gatherer's clock
            out.append((rec, ts, t, "ws", json.dumps(yb), json.dumps(ya), json.dumps(nb), json.dumps(na),
                        yb[-1][0], ya[0][0], ya[0][0] - yb[-1][0], sid, i + 1))  # fmt: skip
    return out


def gatherer_columns(table: str) -> tuple[str, ...]:
    return schema.TABLES[table].gatherer_columns


def table_bytes(conn: psycopg.Connection, table: str) -> tuple[int, int]:
    """(total incl. indexes and TOAST, heap + TOAST only) over the table and all its partitions."""
    total, heap = conn.execute(
        "SELECT coalesce(sum(pg_total_relation_size(relid)), 0), coalesce(sum(pg_table_size(relid)), 0)"
        " FROM pg_partition_tree(%s)",
        (table,),
    ).fetchone()
    return int(total), int(heap)


def row_width(conn: psycopg.Connection, table: str) -> float:
    return float(conn.execute(f"SELECT avg(pg_column_size(t.*)) FROM {table} t").fetchone()[0] or 0)


async def merge_all(cluster: PostgresCluster, prod: str, gdb: str) -> None:
    s = DedupSettings.model_validate(
        {
            "production": {"dsn": cluster.dsn(prod, "deduplicator"), "password": "env:KB_PW", "allow_insecure": True},
            "gatherers": [
                {
                    "name": "gatherer-1",
                    "database": {
                        "dsn": cluster.dsn(gdb, "dedup_reader"),
                        "password": "env:KB_PW",
                        "allow_insecure": True,
                    },
                }
            ],
            "sync": {"market_sync_enabled": False, "min_batch_rows": 5000, "max_batch_rows": 50_000},
        }
    )
    for table in TABLES:
        loop = SyncLoop(s.gatherers[0], schema.TABLES[table], s.production, s.sync, DedupMetrics(), asyncio.Event())
        while await loop.step():
            pass
        await loop.close_gatherer()
        await loop.close_production()


def parquet_bytes(conn: psycopg.Connection, table: str, lo: int, hi: int, path: Path) -> int:
    import pyarrow.parquet as pq

    from kalshictl.research.export import _select, _to_table, arrow_schema, table_columns

    cols = table_columns(conn, table)
    schema = arrow_schema(table, cols, by_series=False)
    with conn.cursor(name=f"bench_{table}") as cur:
        cur.itersize = 50_000
        cur.execute(_select(table, cols, False), (lo, hi))
        writer = pq.ParquetWriter(str(path), schema, compression="zstd")
        while batch := cur.fetchmany(50_000):
            writer.write_table(_to_table(batch, schema))
        writer.close()
    conn.rollback()
    return path.stat().st_size


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000, help="rows per table")
    ap.add_argument("--levels", type=int, default=10, help="price levels per side of a snapshot")
    ap.add_argument("--markets", type=int, default=2000, help="distinct tickers the rows spread over")
    ap.add_argument("--rates", default="2000,20000", help="messages/s per gatherer to project")
    ap.add_argument(
        "--mix", default=",".join(f"{k}={v}" for k, v in DEFAULT_MIX.items()), help="table=share of messages"
    )
    ap.add_argument("--json", action="store_true", help="one JSON line with every figure at the end")
    args = ap.parse_args()
    os.environ["KB_PW"] = PW
    mix = {k: float(v) for k, v in (p.split("=") for p in args.mix.split(","))}
    rng = random.Random(7)
    names = tickers(args.markets, rng)
    n = args.rows
    base = (time.time_ns() // 1000) - n * 1000 - 60_000_000  # the last n ms: inside the partitions migrate made
    figures: dict[str, dict[str, float]] = {}
    ok = True
    with PostgresCluster() as cluster, tempfile.TemporaryDirectory(prefix="kalshictl-bench-storage-") as tmp:
        gdb, prod = make_db(cluster, "g1", "gatherer"), make_db(cluster, "prod", "production")
        with psycopg.connect(cluster.dsn(gdb), autocommit=True) as g, psycopg.connect(cluster.dsn(prod)) as p:
            empty_g = {t: table_bytes(g, t) for t in TABLES}
            empty_p = {t: table_bytes(p, t) for t in TABLES}
            t0 = time.perf_counter()
            for table in TABLES:
                cols = gatherer_columns(table)
                data = rows_for(table, n, names, base, args.levels, rng)
                for lo in range(0, n, 5000):  # a gatherer's batches: one transaction each
                    with (
                        g.transaction(),
                        g.cursor() as cur,
                        cur.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as cp,
                    ):
                        for row in data[lo : lo + 5000]:
                            cp.write_row(row)
            write_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            asyncio.run(merge_all(cluster, prod, gdb))
            merge_s = time.perf_counter() - t0
            for table in TABLES:
                g.execute(f"VACUUM ANALYZE {table}")  # visibility map and statistics, as autovacuum leaves them
            p.commit()
            p.autocommit = True
            for table in TABLES:
                p.execute(f"VACUUM ANALYZE {table}")
            p.autocommit = False
            for table in TABLES:
                got = p.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                ok &= got == n
                p.rollback()
                gt, gh = (a - b for a, b in zip(table_bytes(g, table), empty_g[table], strict=True))
                pt, ph = (a - b for a, b in zip(table_bytes(p, table), empty_p[table], strict=True))
                pq_bytes = parquet_bytes(
                    p, table, base - 1_000_000, base + n * 1000 + 1_000_000, Path(tmp) / f"{table}.parquet"
                )
                figures[table] = {
                    "gatherer": gt / n,
                    "gatherer_heap": gh / n,
                    "gatherer_floor": row_width(g, table),
                    "production": pt / n,
                    "production_heap": ph / n,
                    "production_floor": row_width(p, table),
                    "parquet": pq_bytes / n,
                }
                p.rollback()
    print(f"bytes per row ({n:,} rows per table, {args.levels} levels per book side, {args.markets:,} markets;"
          f" written in {write_s:.1f}s, merged in {merge_s:.1f}s)")  # fmt: skip
    cols = ("gatherer", "(heap", "floor)", "production", "(heap", "floor)", "Parquet")
    print(f"{'table':<22}" + "".join(f"{c:>{w}}" for c, w in zip(cols, (10, 8, 8, 12, 8, 8, 9), strict=True)))
    for table, f in figures.items():
        print(
            f"{table:<22}{f['gatherer']:>10,.0f}{f['gatherer_heap']:>8,.0f}{f['gatherer_floor']:>8,.0f}"
            f"{f['production']:>12,.0f}{f['production_heap']:>8,.0f}{f['production_floor']:>8,.0f}{f['parquet']:>9,.1f}"
        )
    per_msg = {tier: sum(mix[t] * figures[t][tier] for t in TABLES) for tier in ("gatherer", "production", "parquet")}
    print(
        "per message (mix " + ", ".join(f"{t} {mix[t]:.0%}" for t in TABLES) + "): "
        + ", ".join(f"{tier} {b:,.1f} B" for tier, b in per_msg.items())
    )  # fmt: skip
    projection = {}
    for rate in (int(r) for r in args.rates.split(",")):
        gb = {tier: b * rate * 86_400 / 1e9 for tier, b in per_msg.items()}
        projection[rate] = gb
        print(
            f"at {rate:,} messages/s: gatherer {gb['gatherer']:,.1f} GB/day (each of three), production"
            f" {gb['production']:,.1f} GB/day, Parquet {gb['parquet']:,.2f} GB/day"
        )
    if args.json:
        print(json.dumps({"rows": n, "levels": args.levels, "bytes_per_row": figures, "bytes_per_message": per_msg,
                          "gb_per_day": projection, "valid": ok}))  # fmt: skip
    if not ok:
        print("INVALID: production does not hold every row")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
