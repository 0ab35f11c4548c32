"""History import benchmark: requests/s and rows/s of ``kalshictl history import`` against the local exchange's
seeded past (``kalshictl sim --history-days``, its own process, as the exchange is remote), beside the rate-limit
floor (the import's REST budget, ``deduplicator.history.requests_per_second``) and an unbudgeted run (the ceiling:
what production, the parser and the exchange allow) from the same run.

A REST-bound import should spend its whole budget: the figure is requests/s ÷ budget, at least 0.9 with the default
candle periods (60, 1440). With 1-minute candles a request carries up to 10,000 rows and the import becomes
row-bound: that mix is printed too (``--minute``), its floor is the ceiling's rows/s.
Exits non-zero if a run was invalid (the trades differ from the exchange's ground truth) or below 0.9× the floor.
Usage: python bench/bench_history.py [--days 16] [--rps 18] [--workers 8] [--minute]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time

import psycopg

from kalshictl.config import DedupSettings
from kalshictl.db.embedded import PostgresCluster
from kalshictl.db.migrate import migrate
from kalshictl.db.roles import ROLES, ensure_role
from kalshictl.dedup.history.importer import import_history
from kalshictl.dedup.history.plan import ImportRange
from kalshictl.sim.history import HistoryWorld
from kalshictl.sim.markets import Universe

PW = "bench-pw"


def make_db(cluster: PostgresCluster, name: str) -> str:
    cluster.create_database(name)
    with psycopg.connect(cluster.dsn(name), autocommit=True) as conn:
        migrate(conn, "production")
        for spec in ROLES:
            if spec.target == "production" and spec.name == "deduplicator":
                ensure_role(conn, spec, PW, name)
    return name


def settings(cluster: PostgresCluster, db: str, rest_url: str, rps: float, workers: int) -> DedupSettings:
    return DedupSettings.model_validate(
        {
            "production": {"dsn": cluster.dsn(db, "deduplicator"), "password": "env:KB_PW", "allow_insecure": True},
            "gatherers": [{"name": "g1", "database": {"dsn": cluster.dsn(db), "allow_insecure": True}}],
            "exchange": {"rest_url": rest_url, "allow_insecure": True},
            "sync": {"market_sync_enabled": False},
            "history": {"requests_per_second": rps, "workers": workers},
        }
    )


def start_sim(days: int, seed: int) -> tuple[subprocess.Popen, str]:
    args = [sys.executable, "-m", "kalshictl", "sim", "--markets", "60", "--seed", str(seed), "--port", "0",
            "--paused", "--rest-tier", "unlimited", "--history-days", str(days)]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("REST "):
            return proc, line.split()[1]
    raise RuntimeError("kalshictl sim did not start")


def run(cluster: PostgresCluster, name: str, rest_url: str, rps: float, workers: int, rng: ImportRange) -> dict:
    db = make_db(cluster, name)
    result = asyncio.run(import_history(settings(cluster, db, rest_url, rps, workers), rng))
    with psycopg.connect(cluster.dsn(db)) as conn:
        result["stored_trades"] = conn.execute("SELECT count(*) FROM trades").fetchone()[0]
    result["rows"] = result["markets"] + result["trades"] + result["candles"]
    return result


def line(label: str, r: dict, floor: str) -> str:
    return (
        f"{label}: {r['requests']} requests, {r['rows']} rows in {r['elapsed_s']:.1f}s: "
        f"{r['requests_per_s']:.1f} req/s, {r['rows_per_s']:.0f} rows/s ({floor}; throttled {r['throttled']})"
    )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=int, default=16)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--rps", type=float, default=18.0, help="the import's REST budget (the floor)")
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--minute", action="store_true", help="also the 1-minute candle mix (row-bound)")
    args = ap.parse_args()
    os.environ["KB_PW"] = PW
    anchor = int(time.time()) // 86_400 * 86_400  # the sim lays its past out before today 00:00 UTC
    truth = len(HistoryWorld(Universe(60, args.seed, anchor, 0.1), args.days, args.seed).all_trades())
    cluster = PostgresCluster()
    cluster.start()
    sim, rest_url = start_sim(args.days, args.seed)
    ok = True
    try:
        mixes = [("default candles 60,1440", (60, 1440))] + ([("1-minute mix 1,60,1440", (1, 60, 1440))] * args.minute)
        for n, (label, periods) in enumerate(mixes):
            rng = ImportRange(anchor - args.days * 86_400, anchor, periods=periods)
            ceiling = run(cluster, f"bench_history_{n}_c", rest_url, 100_000.0, args.workers, rng)
            budget = run(cluster, f"bench_history_{n}_b", rest_url, args.rps, args.workers, rng)
            for r in (ceiling, budget):
                if r["stored_trades"] != truth:
                    print(f"INVALID: {r['stored_trades']} trades stored, the exchange has {truth}")
                    return 1
            floor = min(args.rps, ceiling["requests_per_s"])  # the budget, unless rows bound the import below it
            ratio = budget["requests_per_s"] / floor
            print(line(f"history import, {label}, ceiling (unbudgeted)", ceiling, "no budget"))
            print(line(f"history import, {label}", budget, f"floor {floor:.1f} req/s: {ratio:.2f}x"))
            ok &= ratio >= 0.9
        return 0 if ok else 1
    finally:
        sim.send_signal(signal.SIGTERM)
        sim.wait(timeout=30)
        cluster.destroy()


if __name__ == "__main__":
    sys.exit(main())
