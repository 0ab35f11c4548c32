"""Deduplicator benchmark: merge throughput (binary COPY out + binary COPY into staging + one INSERT ... ON CONFLICT)
next to its ceilings (binary COPY out of a gatherer; binary COPY of the same rows into an unindexed table and into
production's keyed table) and the executemany baseline from the same run; steady-state lag; outage catch-up, with
an estimate for a 10-minute outage at the assumed seed rates (``--live-rate``, see docs/performance.md).

Prints one summary line per figure. Exits non-zero only if a run was invalid (production counts wrong).
Usage: python bench/bench_dedup.py [--rows 60000] [--rate 2000] [--seconds 10] [--outage-rows 60000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid

import psycopg

from kalshictl.config import DedupSettings
from kalshictl.db.embedded import PostgresCluster
from kalshictl.db.migrate import migrate
from kalshictl.db.roles import ROLES, ensure_role
from kalshictl.dedup.loops import SyncLoop
from kalshictl.dedup.metrics import DedupMetrics
from kalshictl.dedup.service import Deduplicator
from kalshictl.schema import TRADES
from kalshictl.units import now_us

PW = "bench-pw"
COLS = "trade_id, exchange_ts, received_at, ticker, price, size, taker_side"


def make_db(cluster: PostgresCluster, name: str, target: str) -> str:
    cluster.create_database(name)
    with psycopg.connect(cluster.dsn(name), autocommit=True) as conn:
        migrate(conn, target)  # type: ignore[arg-type]
        for spec in ROLES:
            if spec.target == target and spec.name in ("dedup_reader", "deduplicator"):
                ensure_role(conn, spec, PW, name)
    return name


def settings(cluster: PostgresCluster, prod: str, gdbs: list[str], **sync) -> DedupSettings:
    return DedupSettings.model_validate(
        {
            "production": {"dsn": cluster.dsn(prod, "deduplicator"), "password": "env:KB_PW", "allow_insecure": True},
            "gatherers": [
                {
                    "name": f"g{i + 1}",
                    "database": {
                        "dsn": cluster.dsn(db, "dedup_reader"),
                        "password": "env:KB_PW",
                        "allow_insecure": True,
                    },
                }
                for i, db in enumerate(gdbs)
            ],
            "sync": {"market_sync_enabled": False, "interval_ms": 50, "wait_for_gatherer_s": 10, **sync},
            "http": {"port": 0},
        }
    )


def write(cluster: PostgresCluster, db: str, ids: range, per_tx: int = 5000, received_at: int | None = None) -> None:
    with psycopg.connect(cluster.dsn(db), autocommit=True) as conn:
        for lo in range(ids.start, ids.stop, per_tx):
            rec = received_at or now_us()
            with conn.transaction(), conn.cursor() as cur, cur.copy(f"COPY trades ({COLS}) FROM STDIN") as cp:
                for i in range(lo, min(lo + per_tx, ids.stop)):
                    cp.write_row((uuid.UUID(int=i + 1), 1_700_000_000_000_000 + i, rec, f"M{i % 50}", 5000, 100, True))


def ceilings(cluster: PostgresCluster, gdb: str, prod: str) -> tuple[float, float, float]:
    """rows/s: binary COPY out of a gatherer's trades; binary COPY of those rows into an unindexed copy of production's
    trades and into production's (keyed, partitioned) trades. ``prod`` is left empty."""
    cols = f"{COLS}, gatherer"
    with psycopg.connect(cluster.dsn(gdb)) as g:
        t0 = time.perf_counter()
        chunks = []
        with g.cursor().copy(f"COPY (SELECT {COLS}, 'g1'::text FROM trades) TO STDOUT (FORMAT BINARY)") as cp:
            for data in cp:
                chunks.append(bytes(data))
        n = g.execute("SELECT count(*) FROM trades").fetchone()[0]
        out = n / (time.perf_counter() - t0)
    rates = [out]
    with psycopg.connect(cluster.dsn(prod), autocommit=True) as p:
        p.execute("CREATE TABLE ceiling_plain (LIKE trades INCLUDING DEFAULTS)")
        for table in ("ceiling_plain", "trades"):
            t0 = time.perf_counter()
            with (
                p.transaction(),
                p.cursor() as cur,
                cur.copy(f"COPY {table} ({cols}) FROM STDIN (FORMAT BINARY)") as cp,
            ):
                for c in chunks:
                    cp.write(c)
            rates.append(n / (time.perf_counter() - t0))
        p.execute("DROP TABLE ceiling_plain")
        p.execute("TRUNCATE trades")
    return rates[0], rates[1], rates[2]


def count(cluster: PostgresCluster, db: str) -> int:
    with psycopg.connect(cluster.dsn(db)) as conn:
        return conn.execute("SELECT count(*) FROM trades").fetchone()[0]


async def drain(s: DedupSettings) -> None:
    loops = [SyncLoop(g, TRADES, s.production, s.sync, DedupMetrics(), asyncio.Event()) for g in s.gatherers]

    async def one(lp: SyncLoop) -> None:
        while await lp.step():
            pass
        await lp.close_gatherer()
        await lp.close_production()

    await asyncio.gather(*(one(lp) for lp in loops))


def executemany_baseline(cluster: PostgresCluster, prod: str, gdbs: list[str]) -> int:
    offered = 0
    with psycopg.connect(cluster.dsn(prod)) as pconn:
        for i, db in enumerate(gdbs):
            with psycopg.connect(cluster.dsn(db)) as gconn:
                rows = gconn.execute(f"SELECT {COLS} FROM trades ORDER BY txid").fetchall()
            with pconn.cursor() as cur:
                cur.executemany(
                    f"INSERT INTO trades ({COLS}, gatherer) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT DO NOTHING",
                    [(*r, f"g{i + 1}") for r in rows],
                )
            pconn.commit()
            offered += len(rows)
    return offered


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=60_000, help="distinct trades; each gatherer holds 2/3 of them")
    ap.add_argument("--rate", type=int, default=2000, help="steady-state insert rate, rows/s per gatherer")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--outage-rows", type=int, default=60_000, help="backlog of a scaled-down 10-minute outage")
    ap.add_argument(
        "--live-rate", type=int, default=2000, help="assumed seed rate: distinct rows/s each gatherer records"
    )
    args = ap.parse_args()
    os.environ["KB_PW"] = PW
    ok = True
    with PostgresCluster() as cluster:
        n = args.rows
        gdbs = [make_db(cluster, f"g{i}", "gatherer") for i in range(3)]
        views = [range(0, 2 * n // 3), range(n // 3, n), range(0, n)]
        views[2] = range(0, n // 3)  # third gatherer: partial
        for db, view in zip(gdbs, views, strict=True):
            write(cluster, db, view)
        offered = sum(len(v) for v in views)

        # 0. ceilings, same rows, same run
        prod = make_db(cluster, "prod_copy", "production")
        c_out, c_plain, c_keyed = ceilings(cluster, gdbs[0], prod)

        # 1. throughput: COPY+staging vs executemany, same data, same run
        t0 = time.perf_counter()
        await drain(settings(cluster, prod, gdbs, min_batch_rows=5000, max_batch_rows=50_000))
        t_copy = time.perf_counter() - t0
        ok &= count(cluster, prod) == n
        base = make_db(cluster, "prod_base", "production")
        t0 = time.perf_counter()
        executemany_baseline(cluster, base, gdbs)
        t_base = time.perf_counter() - t0
        ok &= count(cluster, base) == n
        merge_rate = offered / t_copy
        print(
            f"merge throughput: {merge_rate:,.0f} rows/s offered from 3 gatherers"
            f" ({offered:,} rows, {n:,} distinct; binary COPY + staging + ON CONFLICT) vs executemany"
            f" {offered / t_base:,.0f} rows/s: x{t_base / t_copy:.1f}; ceilings (same rows): binary COPY out of a"
            f" gatherer {c_out:,.0f} rows/s, binary COPY into an unindexed table {c_plain:,.0f} rows/s, into"
            f" production's keyed trades {c_keyed:,.0f} rows/s (merge = x{merge_rate / c_keyed:.2f} of it)"
        )

        # 2. steady-state lag at a fixed insert rate (all three gatherers receive every row)
        prod2 = make_db(cluster, "prod_lag", "production")
        lags: list[float] = []

        def on_merge(g: str, t: str, result, at: float) -> None:
            if t == "trades" and result.min_clock:
                lags.append(at - result.min_clock / 1e6)

        service = Deduplicator(settings(cluster, prod2, gdbs), on_merge=on_merge)
        task = asyncio.create_task(service.run())
        await service.wait_started()
        while count(cluster, prod2) < n:  # first catch up with the throughput stage's rows
            await asyncio.sleep(0.05)
        lags.clear()
        tick = 0.05
        per_tick = max(1, int(args.rate * tick))
        start_id = 10_000_000
        i = start_id
        conns = [psycopg.connect(cluster.dsn(db), autocommit=True) for db in gdbs]

        def tick_write(lo: int) -> None:
            rec = now_us()
            for conn in conns:
                with conn.cursor() as cur, cur.copy(f"COPY trades ({COLS}) FROM STDIN") as cp:
                    for k in range(lo, lo + per_tick):
                        cp.write_row(
                            (uuid.UUID(int=k + 1), 1_700_000_000_000_000 + k, rec, f"M{k % 50}", 5000, 1, True)
                        )

        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            t_next = time.monotonic() + tick
            await asyncio.to_thread(tick_write, i)
            i += per_tick
            await asyncio.sleep(max(0.0, t_next - time.monotonic()))
        for conn in conns:
            conn.close()
        deadline = time.monotonic() + 30
        expected = n + i - start_id
        while count(cluster, prod2) < expected and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        ok &= count(cluster, prod2) == expected
        q = statistics.quantiles(lags, n=100) if len(lags) >= 2 else [0.0] * 99
        print(
            f"steady-state lag at {(i - start_id) / args.seconds:,.0f} rows/s x 3 gatherers: p50 {q[49] * 1000:.0f} ms,"
            f" p99 {q[98] * 1000:.0f} ms (worst row of each merge, receive -> production commit; {len(lags)} merges)"
        )

        # 3. catch-up after an outage backlog on one gatherer (scaled-down 10-minute outage)
        await asyncio.to_thread(
            write, cluster, gdbs[0], range(20_000_000, 20_000_000 + args.outage_rows), 5000, now_us()
        )
        t0 = time.perf_counter()
        target = expected + args.outage_rows
        deadline = time.monotonic() + 120
        while count(cluster, prod2) < target and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        t_catch = time.perf_counter() - t0
        ok &= count(cluster, prod2) == target
        print(
            f"outage catch-up: {args.outage_rows:,} backlog rows merged in {t_catch:.2f} s"
            f" ({args.outage_rows / t_catch:,.0f} rows/s) while live sync continued"
        )
        # A 10-minute production/deduplicator outage at the assumed rate: every gatherer holds every row.
        live_offered = 3 * args.live_rate
        backlog = 600 * live_offered
        spare = merge_rate - live_offered
        est = backlog / spare if spare > 0 else float("inf")
        print(
            f"10-minute outage estimate at {args.live_rate:,} rows/s per gatherer x 3: backlog {backlog:,} offered"
            f" rows, caught up in {est:,.0f} s at the measured merge rate less the live rate (goal <= 60 s)"
        )
        service.request_stop()
        await task
    if not ok:
        print("INVALID RUN: production counts differ from the truth", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
