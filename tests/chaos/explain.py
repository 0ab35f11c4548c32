"""Explain a failed `make chaos` run kept with ``CHAOS_KEEP_DIR``: for every row production lacks (or holds twice),
each gatherer's copy of it and the gap windows it recorded around it.

    .venv/bin/python -m tests.chaos.explain DIR/<variant>

Starts the run's stopped clusters, compares production with the ground truth, prints, and stops them again.
"""

from __future__ import annotations

import sys
from pathlib import Path

import psycopg

from kalshictl.db.embedded import PostgresCluster
from kalshictl.local.pipeline import PROD_DB
from kalshictl.local.verify import TABLE_CHANNELS, compare, render_table

NEAR_US = 1_000_000
WINDOW_COLUMNS = "channel, reason, subscription, tickers, from_ts, to_ts, recovery, instance_id"


def _gatherers(clusters: dict[str, PostgresCluster]) -> list[tuple[str, PostgresCluster, str]]:
    """(name, cluster, database) of each gatherer of the run."""
    out = []
    for name, cluster in clusters.items():
        with psycopg.connect(cluster.dsn(), autocommit=True) as c:
            dbs = [r[0] for r in c.execute("SELECT datname FROM pg_database WHERE datname LIKE 'kalshi%'")]
        out.append((name, cluster, dbs[0]))
    return out


def explain(run: Path) -> None:
    production = PostgresCluster(run / "pg-production")
    named = {p.name.removeprefix("pg-"): PostgresCluster(p) for p in sorted(run.glob("pg-gatherer-*"))}
    clusters = [production, *named.values()]
    for c in clusters:
        c.start()
    try:
        gatherers = _gatherers(named)
        reports = compare(production.dsn(PROD_DB), run / "ground-truth.jsonl", [g[0] for g in gatherers])
        print(render_table(reports))
        for rep in reports:
            for ex in rep.examples:
                kind, key = next(iter(ex.items()))
                ticker = key[0]
                ts = key[1] if rep.table != "lifecycle_events" else key[2]
                print(f"\n{rep.table} {kind}: {key}")
                for name, cluster, db in gatherers:
                    with psycopg.connect(cluster.dsn(db)) as c:
                        rows = c.execute(
                            f"SELECT * FROM {rep.table} WHERE ticker = %s AND exchange_ts BETWEEN %s AND %s"
                            " ORDER BY exchange_ts",
                            (ticker, ts - NEAR_US, ts + NEAR_US),
                        ).fetchall()
                        windows = c.execute(
                            f"SELECT {WINDOW_COLUMNS} FROM sequence_gaps WHERE (channel = '*' OR channel = ANY(%s))"
                            " AND (tickers IS NULL OR %s = ANY(tickers)) AND from_ts <= %s"
                            " AND (to_ts IS NULL OR to_ts >= %s) ORDER BY from_ts",
                            (list(TABLE_CHANNELS[rep.table]), ticker, ts + 30 * NEAR_US, ts - 30 * NEAR_US),
                        ).fetchall()
                    print(f"  {name}: {len(rows)} rows of {ticker} within 1 s")
                    for r in rows:
                        print("    row", r)
                    for w in windows:
                        f, t = w[4], w[5]
                        span = f"{(f - ts) / 1e6:+.3f}s .. {'open' if t is None else f'{(t - ts) / 1e6:+.3f}s'}"
                        print(f"    window {w[0]} {w[1]} {w[2]} {span} recovery={w[6]} instance={w[7]}")
    finally:
        for c in clusters:
            c.stop()


if __name__ == "__main__":
    explain(Path(sys.argv[1]))
