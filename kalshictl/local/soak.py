"""``make soak``: the whole pipeline through many simulated days in minutes, proving every tier stays bounded and
production ∪ cold tier equals the exchange's ground truth (docs/deduplicator.md, "The soak").

The local exchange, three gatherers and the deduplicator run as real processes (kalshictl/local/demo.py) on the one
clock (kalshictl/clock.py): every process gets ``KALSHICTL_CLOCK`` at rate 1 starting at 01:00 UTC of simulated day
0. A simulated day is ``day_s`` wall seconds of trading. Then the exchange pauses, the gatherers flush and stop, the
deduplicator drains and stops, and time **jumps** a day: the exchange through ``POST /_sim/jump``, this process by
installing the shifted clock, the services by restarting with the shifted ``KALSHICTL_CLOCK``. In the new day the
scheduled jobs run exactly as an operator's timers would: ``cold export`` (closed days to moto's S3 server, verified),
production retention (``production.keep_days``), gatherer retention (``retention run`` of each gatherer config, when
that command exists). PostgreSQL's own clock is wall time, so before each simulated day the soak creates that day's
partitions as the owner, as ``kalshi_ensure_partitions`` would on that day.

After the last day, production and every verified cold day are loaded into a scratch database and compared with the
ground truth by kalshictl/local/verify.py (0 lost without a record, 0 duplicated or invented).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import orjson
import psycopg
import yaml

from kalshictl import clock
from kalshictl.db.roles import OWNER_ROLE
from kalshictl.db.rows import one_row
from kalshictl.local.demo import Demo, DemoOptions
from kalshictl.local.processes import kalshictl_argv
from kalshictl.local.verify import TableReport, compare, render_table

DAY_US = 86_400_000_000
HOUR_US = 3_600_000_000
BUCKET = "kalshi-cold"
EVENT_TABLES = ("trades", "orderbook_deltas", "orderbook_snapshots", "tickers", "lifecycle_events")
GROWTH_LIMIT = 1.2  # last day's bytes <= 1.2 x the first full day's, per bounded tier


@dataclass
class SoakOptions:
    """Shape of a soak."""

    days: int = 8
    day_s: float = 30.0
    markets: int = 40
    rate: float = 80.0
    seed: int = 21
    gatherer_keep_days: int = 2
    production_keep_days: int = 2
    workdir: Path | None = None


@dataclass
class DayRow:
    """One simulated day, measured after that day's scheduled jobs ran."""

    day: str
    gatherer_rows: int = 0
    gatherer_bytes: int = 0  # the time-series tables' partitions, all gatherers
    gatherer_other_bytes: int = 0  # every other table (markets, gap windows, ledgers): kept by design
    production_rows: int = 0
    production_bytes: int = 0
    production_other_bytes: int = 0
    cold_rows: int = 0
    cold_bytes: int = 0
    dropped_production: int = 0
    dropped_gatherer: int = 0
    exports_verified: int = 0
    exports_unverified: int = 0
    wall_s: float = 0.0


@dataclass
class SoakResult:
    days: list[DayRow] = field(default_factory=list)
    tables: list[TableReport] = field(default_factory=list)
    gatherer_retention: bool = False
    notes: list[str] = field(default_factory=list)

    def bounded(self, values: list[int], keep_days: int) -> bool:
        """Size stops growing once the keep window is full: last <= GROWTH_LIMIT x first full day."""
        first_full = keep_days - 1  # after day k's jobs the tier holds days k-keep+1 .. k
        if len(values) <= first_full + 1:
            return False
        return values[-1] <= GROWTH_LIMIT * values[first_full]

    def verdict(self, options: SoakOptions) -> dict[str, Any]:
        g = [d.gatherer_bytes for d in self.days]
        p = [d.production_bytes for d in self.days]
        c = [d.cold_bytes for d in self.days]
        missing = sum(t.lost_unrecorded for t in self.tables)
        duplicated = sum(t.duplicated + t.extra for t in self.tables)
        ok = (
            len(self.days) >= 7
            and self.bounded(g, options.gatherer_keep_days)
            and self.bounded(p, options.production_keep_days)
            and all(b >= a for a, b in pairwise(c))
            and missing == 0
            and duplicated == 0
            and bool(self.tables)
            and all(d.exports_unverified == 0 for d in self.days)
        )
        return {
            "days": len(self.days),
            "gatherer_bytes": g,
            "gatherer_other_bytes": [d.gatherer_other_bytes for d in self.days],
            "production_bytes": p,
            "production_other_bytes": [d.production_other_bytes for d in self.days],
            "cold_bytes": c,
            "missing": missing,
            "duplicated": duplicated,
            "lost_recorded": sum(t.lost_recorded for t in self.tables),
            "verdict": "pass" if ok else "fail",
        }


def render_days(rows: list[DayRow]) -> str:
    """The per-day table."""
    head = ["day", "gatherer rows", "gatherer MB", "(other)", "prod rows", "prod MB", "(other)", "cold rows",
            "cold MB", "prod parts dropped", "gatherer parts dropped", "exports verified", "wall s"]  # fmt: skip
    body = [
        [
            r.day,
            f"{r.gatherer_rows:,}",
            f"{r.gatherer_bytes / 1e6:.2f}",
            f"{r.gatherer_other_bytes / 1e6:.2f}",
            f"{r.production_rows:,}",
            f"{r.production_bytes / 1e6:.2f}",
            f"{r.production_other_bytes / 1e6:.2f}",
            f"{r.cold_rows:,}",
            f"{r.cold_bytes / 1e6:.3f}",
            str(r.dropped_production),
            str(r.dropped_gatherer),
            f"{r.exports_verified}" + (f" ({r.exports_unverified} NOT)" if r.exports_unverified else ""),
            f"{r.wall_s:.0f}",
        ]
        for r in rows
    ]
    widths = [max(len(x) for x in col) for col in zip(head, *body, strict=True)]
    line = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True))  # noqa: E731
    return "\n".join([line(head), "  ".join("-" * w for w in widths), *(line(b) for b in body)])


# -- database helpers --------------------------------------------------------------------------------------------


def ensure_day_partitions(dsn: str, day_start_us: int) -> int:
    """Create every registered table's partitions of one UTC day (as the owner); returns how many were created."""
    created = 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"SET ROLE {OWNER_ROLE}")  # the owner's partitions, which its retention functions may drop
        rows = conn.execute("SELECT table_name, chunk_us FROM kalshi_timeseries WHERE flavor = 'partitioned'")
        for table, chunk in rows.fetchall():
            for lo in range(day_start_us - day_start_us % chunk, day_start_us + DAY_US, chunk):
                name = f"{table}_p{lo // chunk}"
                if one_row(conn.execute("SELECT to_regclass(%s)", (name,)))[0] is None:
                    conn.execute(f"CREATE TABLE {name} PARTITION OF {table} FOR VALUES FROM ({lo}) TO ({lo + chunk})")
                    created += 1
    return created


def tier_size(dsn: str) -> tuple[int, int, int]:
    """(event rows, bytes of the time-series tables' partitions, bytes of every other table), indexes and TOAST
    included. Retention bounds the first; the rest (markets, gap windows, ledgers) is kept by design."""
    with psycopg.connect(dsn) as conn:
        rows = sum(one_row(conn.execute(f"SELECT count(*) FROM {t}"))[0] for t in EVENT_TABLES)
        event, other = one_row(
            conn.execute(
                "SELECT COALESCE(sum(pg_total_relation_size(c.oid)) FILTER (WHERE p.inhparent IS NOT NULL), 0),"
                " COALESCE(sum(pg_total_relation_size(c.oid)) FILTER (WHERE p.inhparent IS NULL), 0)"
                " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " LEFT JOIN pg_inherits p ON p.inhrelid = c.oid"
                " WHERE n.nspname = 'public' AND c.relkind = 'r'"
            )
        )
    return int(rows), int(event), int(other)


def _partitions(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return one_row(
            conn.execute(
                "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE c.relname ~ '_p[0-9]+$'"
            )
        )[0]


# -- the union of production and the cold tier -------------------------------------------------------------------


def _pg_value(value: Any, pg_type: str) -> Any:
    if value is None:
        return None
    if pg_type == "jsonb":
        if isinstance(value, list) and value and isinstance(value[0], dict) and "price" in value[0]:
            return orjson.dumps([[lv["price"], lv["size"]] for lv in value]).decode()
        if isinstance(value, list) and not value:
            return "[]"
        return value if isinstance(value, str) else orjson.dumps(value).decode()
    return value


def load_union(production_dsn: str, union_dsn: str, store: Any, days_by_table: dict[str, list[date]]) -> dict:
    """Copy production's event tables, gap windows and snapshots plus every dropped cold day into ``union_dsn``
    (a migrated production schema); a row present in both tiers is loaded once and counted."""
    both = 0
    with psycopg.connect(production_dsn) as src, psycopg.connect(union_dsn, autocommit=True) as dst:
        for table in (*EVENT_TABLES, "sequence_gaps"):
            cols = src.execute(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = 'public'"
                " AND table_name = %s AND is_generated = 'NEVER' ORDER BY ordinal_position",
                (table,),
            ).fetchall()
            names = [c for c, _ in cols]
            collist = ", ".join(names)
            with src.cursor().copy(f"COPY (SELECT {collist} FROM {table}) TO STDOUT (FORMAT binary)") as out, \
                    dst.cursor().copy(f"COPY {table} ({collist}) FROM STDIN (FORMAT binary)") as inp:  # fmt: skip
                for chunk in out:
                    inp.write(chunk)
            types: dict[str, str] = dict(cols)
            for day in days_by_table.get(table, []):
                data = store.read_day(table, day)
                if data.num_rows == 0:
                    continue
                marks = ", ".join(["%s"] * len(names))
                sql = f"INSERT INTO {table} ({collist}) VALUES ({marks}) ON CONFLICT DO NOTHING"
                rows = [tuple(_pg_value(r.get(n), types[n]) for n in names) for r in data.to_pylist()]
                with dst.cursor() as cur:
                    cur.executemany(sql, rows)
                    loaded = cur.rowcount
                both += max(0, len(rows) - loaded) if loaded >= 0 else 0
    return {"rows_in_both_tiers": both}


# -- the run -----------------------------------------------------------------------------------------------------


class Soak:
    """Run the pipeline through ``days`` simulated days (see module docs)."""

    def __init__(self, options: SoakOptions, log: Callable[[str], None] = print) -> None:
        self.options = options
        self.log = log
        self.workdir = Path(options.workdir or tempfile.mkdtemp(prefix="kalshictl-soak-"))
        self.demo = Demo(
            DemoOptions(
                markets=options.markets,
                seed=options.seed,
                rate=options.rate,
                workdir=self.workdir,
                keep=options.workdir is not None,
                snapshot_interval_s=10.0,
                # a fixed set of markets: every simulated day carries the same load (a growing universe grows each
                # day's volume in every tier, which is capacity, not retention)
                exchange_variant={"create-share": "0"},
            )
        )
        self.result = SoakResult()
        self.moto: Any = None
        self.endpoint = ""

    # -- clock ---------------------------------------------------------------------------------------------------
    def _set_clock(self, start_us: int, anchor_us: int) -> None:
        clock.install(clock.ScaledClock(rate=1.0, start_us=start_us, anchor_us=anchor_us))
        value = clock.current().to_env() or ""
        os.environ[clock.ENV_VAR] = value
        for proc in self.demo.supervisor.processes.values():
            proc.env[clock.ENV_VAR] = value

    # -- S3 ------------------------------------------------------------------------------------------------------
    def _start_moto(self) -> None:
        import boto3
        from moto.server import ThreadedMotoServer

        from kalshictl.db.embedded import free_port

        for key, value in {"AWS_ACCESS_KEY_ID": "soak", "AWS_SECRET_ACCESS_KEY": "soak",
                           "AWS_DEFAULT_REGION": "us-east-1"}.items():  # fmt: skip
            os.environ[key] = value
        port = free_port()
        self.moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self.moto.start()
        self.endpoint = f"http://127.0.0.1:{port}"
        boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1").create_bucket(Bucket=BUCKET)

    def _configure(self) -> None:
        """Add the cold tier (exporter.s3, production.*) and gatherer retention to the generated configs."""
        pipe = self.demo.pipeline
        path = pipe.config_paths["deduplicator"]
        doc = yaml.safe_load(path.read_text())
        doc["exporter"]["s3"] = {"dest": f"s3://{BUCKET}/kalshi", "endpoint_url": self.endpoint}
        doc["production"] = {"keep_days": self.options.production_keep_days, "export_settle_s": 600}
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        self.retention_cli = self._has_retention_cli()
        if self.retention_cli:
            for i in range(pipe.config.gatherers):
                gpath = pipe.config_paths[pipe.gatherer_name(i)]
                gdoc = yaml.safe_load(gpath.read_text())
                gdoc["gatherer"]["retention"] = {"keep_days": self.options.gatherer_keep_days}
                gpath.write_text(yaml.safe_dump(gdoc, sort_keys=False))

    def _has_retention_cli(self) -> bool:
        proc = subprocess.run(kalshictl_argv("retention", "run", "--help"), capture_output=True, text=True,
                              timeout=120)  # fmt: skip
        return proc.returncode == 0

    # -- one day -------------------------------------------------------------------------------------------------
    def _start_services(self, first: bool) -> None:
        demo, pipe = self.demo, self.demo.pipeline
        if first:
            demo.start()  # exchange (paused), gatherers, deduplicator; resumes the exchange once healthy
            return
        ports = pipe.http_ports()
        for i in range(pipe.config.gatherers):
            demo.supervisor[pipe.gatherer_name(i)].start()
        demo.supervisor["deduplicator"].start()
        for i in range(pipe.config.gatherers):
            demo.wait_healthy(f"http://127.0.0.1:{ports[i]}/health", pipe.gatherer_name(i))
        demo.wait_healthy(f"http://127.0.0.1:{ports[-1]}/health", "deduplicator", accept_degraded=True)
        demo._http.post(f"http://127.0.0.1:{demo.sim_port}/_sim/resume").raise_for_status()

    def _stop_services(self) -> None:
        demo, pipe = self.demo, self.demo.pipeline
        demo._http.post(f"http://127.0.0.1:{demo.sim_port}/_sim/pause").raise_for_status()
        for i in range(pipe.config.gatherers):
            demo.supervisor[pipe.gatherer_name(i)].terminate(30)
        demo._drain()
        demo.supervisor["deduplicator"].terminate(30)

    def _gatherer_retention(self) -> int:
        """Run ``kalshictl retention run`` for each gatherer; returns partitions dropped (by count difference)."""
        pipe = self.demo.pipeline
        before = sum(_partitions(pipe.gatherer_admin_dsn(i)) for i in range(pipe.config.gatherers))
        for i in range(pipe.config.gatherers):
            cfg = str(pipe.config_paths[pipe.gatherer_name(i)])
            proc = subprocess.run(kalshictl_argv("retention", "run", "--config", cfg, "--json"), capture_output=True,
                                  text=True, timeout=300, env=clock.child_env())  # fmt: skip
            if proc.returncode not in (0, 1):
                self.result.notes.append(f"retention run {pipe.gatherer_name(i)}: exit {proc.returncode}: "
                                         f"{proc.stderr.strip()[-300:]}")  # fmt: skip
        after = sum(_partitions(pipe.gatherer_admin_dsn(i)) for i in range(pipe.config.gatherers))
        return max(0, before - after)

    def _jobs(self, row: DayRow) -> None:
        """The day's scheduled jobs, on the one clock: cold export, production retention, gatherer retention."""
        from kalshictl.config import load_settings
        from kalshictl.ops.cold_tier import run_export, run_retention

        settings = load_settings(self.demo.pipeline.config_paths["deduplicator"])
        run = run_export(settings)
        row.exports_verified = run.count("verified")
        row.exports_unverified = run.count("unverified")
        dropped = run_retention(settings)
        row.dropped_production = sum(o.partitions for o in dropped.outcomes if o.action == "dropped")
        if self.retention_cli:
            row.dropped_gatherer = self._gatherer_retention()

    def _measure(self, row: DayRow) -> None:
        from kalshictl.config import load_settings
        from kalshictl.research.cold import open_cold_store

        pipe = self.demo.pipeline
        for i in range(pipe.config.gatherers):
            rows, size, other = tier_size(pipe.gatherer_admin_dsn(i))
            row.gatherer_rows += rows
            row.gatherer_bytes += size
            row.gatherer_other_bytes += other
        row.production_rows, row.production_bytes, row.production_other_bytes = tier_size(pipe.production_dsn())
        settings = load_settings(pipe.config_paths["deduplicator"])
        row.cold_bytes = open_cold_store(settings.require("exporter")).total_bytes()
        with psycopg.connect(pipe.production_dsn()) as conn:
            row.cold_rows = int(
                one_row(
                    conn.execute("SELECT COALESCE(sum(cold_rows), 0) FROM cold_exports WHERE verified_at IS NOT NULL")
                )[0]
            )

    def _all_dsns(self) -> list[str]:
        pipe = self.demo.pipeline
        return [pipe.gatherer_admin_dsn(i) for i in range(pipe.config.gatherers)] + [pipe.production_dsn()]

    # -- compare -------------------------------------------------------------------------------------------------
    def _compare(self) -> None:
        from kalshictl.config import load_settings
        from kalshictl.db import migrate as mig
        from kalshictl.research.cold import cold_days, open_cold_store

        pipe = self.demo.pipeline
        with psycopg.connect(pipe.production_cluster.dsn("postgres"), autocommit=True) as conn:
            conn.execute("DROP DATABASE IF EXISTS kalshi_union")
            conn.execute("CREATE DATABASE kalshi_union")
        union = pipe.production_cluster.dsn("kalshi_union")
        with psycopg.connect(union, autocommit=True) as conn:
            mig.migrate(conn, "production")
        settings = load_settings(pipe.config_paths["deduplicator"])
        store = open_cold_store(settings.require("exporter"))
        with psycopg.connect(pipe.production_dsn()) as conn:
            days = {t: sorted(cold_days(conn, t)) for t in (*EVENT_TABLES, "sequence_gaps")}
        info = load_union(pipe.production_dsn(), union, store, days)
        self.result.notes.append(f"rows in both tiers (loaded once): {info['rows_in_both_tiers']}")
        gatherers = [pipe.gatherer_name(i) for i in range(pipe.config.gatherers)]
        self.result.tables = compare(union, self.demo.ground_truth, gatherers)

    # -- run -----------------------------------------------------------------------------------------------------
    def run(self) -> SoakResult:
        opts = self.options
        anchor = time.time_ns() // 1000
        day0 = (anchor // DAY_US + 1) * DAY_US  # tomorrow 00:00 UTC
        try:
            self._start_moto()
            self._set_clock(day0 + HOUR_US, anchor)
            self.demo.setup()
            self._configure()
            for k in range(opts.days):
                started = time.monotonic()
                day_start = day0 + k * DAY_US
                for dsn in self._all_dsns():
                    ensure_day_partitions(dsn, day_start)
                self._start_services(first=k == 0)
                time.sleep(opts.day_s)
                self._stop_services()
                # the jump: a day later for the exchange, this process and (at their restart) the services
                self.demo._http.post(f"http://127.0.0.1:{self.demo.sim_port}/_sim/jump",
                                     params={"seconds": "86400"}).raise_for_status()  # fmt: skip
                self._set_clock(day0 + HOUR_US + (k + 1) * DAY_US, anchor)
                for dsn in self._all_dsns():
                    ensure_day_partitions(dsn, day_start + DAY_US)
                row = DayRow((date(1970, 1, 1) + timedelta(microseconds=day_start)).isoformat())
                self._jobs(row)
                self._measure(row)
                row.wall_s = time.monotonic() - started
                self.result.days.append(row)
                self.log(render_days(self.result.days[-1:]).splitlines()[-1])
            with contextlib.suppress(Exception):
                self.demo._http.post(f"http://127.0.0.1:{self.demo.sim_port}/_sim/flush")
            self.demo.supervisor["exchange"].terminate(30)
            self._compare()
            return self.result
        finally:
            self.demo.close()
            if self.moto is not None:
                self.moto.stop()
            if opts.workdir is None:
                shutil.rmtree(self.workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """``python -m kalshictl.local.soak [--days N] [--day-s S]``: run, print the table and one JSON line; 1 = fail."""
    import argparse

    parser = argparse.ArgumentParser(description="time-compressed soak of the whole pipeline")
    parser.add_argument("--days", type=int, default=SoakOptions.days)
    parser.add_argument("--day-s", type=float, default=SoakOptions.day_s)
    parser.add_argument("--markets", type=int, default=SoakOptions.markets)
    parser.add_argument("--rate", type=float, default=SoakOptions.rate)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    options = SoakOptions(days=args.days, day_s=args.day_s, markets=args.markets, rate=args.rate, workdir=args.workdir)
    started = time.monotonic()
    result = Soak(options, log=lambda s: print(s, flush=True)).run()
    print(render_days(result.days))
    if result.tables:
        print(render_table(result.tables))
    for note in result.notes:
        print(f"note: {note}")
    print(f"wall time: {time.monotonic() - started:.0f}s")
    verdict = result.verdict(options)
    print(orjson.dumps(verdict).decode(), flush=True)
    return 0 if verdict["verdict"] == "pass" else 1


if __name__ == "__main__":
    raise SystemExit(main())
