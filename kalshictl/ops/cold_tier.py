"""Production's cold tier: export every closed UTC day, verify it after upload, record it in the ledger
(``cold_exports``, migrations/production/021_cold_exports.sql), and drop production partitions older than
``keep_days`` only when the ledger holds a verified export of that day (docs/deduplicator.md, "Cold tier and
production retention").

One export of a table-day: fingerprint production's rows of the day (count + md5 sum, in SQL), export, fingerprint
again, read the day back from S3 (count + content checksum). It is **verified** when both fingerprints are equal (no
row arrived during the export) and S3 holds exactly that many rows. A row that arrives later for an exported day:

* before the drop, ``kalshi_drop_exported_day`` fingerprints the day again under an exclusive lock on its partitions
  and refuses (the ledger row loses its verification) when production changed; the next run re-exports the whole
  day from production, which still holds all of it;
* after the drop, the row lands in the default partition and stays in production (nothing deletes it); research
  reads join both tiers, and the export run reports such days as ``late_after_drop``.

Every decision reads the one clock, passed in as ``now_us``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from kalshictl.db.rows import one_row
from kalshictl.errors import ExitCode, KalshiCtlError
from kalshictl.research.times import US_PER_DAY, day_bounds

if TYPE_CHECKING:
    from collections.abc import Callable

    import psycopg

    from kalshictl.config import Settings
    from kalshictl.research.cold import ColdStore

EPOCH = date(1970, 1, 1)


@dataclass
class DayOutcome:
    """What one run did with one table-day."""

    table: str
    day: str
    action: str  # exported | verified | unverified | kept | dropped | refused | late_after_drop
    rows: int = 0
    partitions: int = 0
    detail: str = ""


@dataclass
class ColdRun:
    """The report of one export or retention run (``--json``)."""

    now_us: int
    outcomes: list[DayOutcome] = field(default_factory=list)

    def count(self, action: str) -> int:
        return sum(o.action == action for o in self.outcomes)

    def as_dict(self) -> dict[str, Any]:
        actions = sorted({o.action for o in self.outcomes})
        return {
            "now_us": self.now_us,
            "summary": {a: self.count(a) for a in actions},
            "days": [asdict(o) for o in self.outcomes],
        }


def timeseries_tables(conn: psycopg.Connection) -> dict[str, tuple[str, int, str]]:
    """Production's time-series tables: name -> (time column, chunk µs, flavor)."""
    rows = conn.execute("SELECT table_name, time_column, chunk_us, flavor FROM kalshi_timeseries ORDER BY 1")
    return {t: (c, int(u), f) for t, c, u, f in rows.fetchall()}


def fingerprint(conn: psycopg.Connection, table: str, day: date) -> tuple[int, str]:
    """(rows, fingerprint) of production's rows of ``table`` on ``day``."""
    lo, hi = day_bounds(day)
    rows, fp = one_row(conn.execute("SELECT * FROM kalshi_day_fingerprint(%s, %s, %s)", (table, lo, hi)))
    return int(rows), fp


def days_in_production(conn: psycopg.Connection, table: str, time_column: str, chunk_us: int) -> list[date]:
    """UTC days production holds ``table`` partitions or default-partition rows for, oldest first."""
    days: set[date] = set()
    rows = conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = %s::regclass",
        (table,),
    ).fetchall()
    for (name,) in rows:
        suffix = name.rsplit("_p", 1)[-1]
        if name.startswith(f"{table}_p") and suffix.lstrip("-").isdigit():
            days.add(EPOCH + timedelta(microseconds=int(suffix) * chunk_us))
    # through the parent table (a role has no privilege on a partition itself: docs/security.md)
    default = conn.execute(
        f"SELECT DISTINCT {time_column} / {US_PER_DAY} FROM {table} WHERE tableoid = %s::regclass",
        (f"{table}_default",),
    ).fetchall()
    days |= {EPOCH + timedelta(days=int(d)) for (d,) in default}
    return sorted(days)


def _partitions_of(conn: psycopg.Connection, table: str, chunk_us: int, day: date) -> bool:
    """Whether any partition of ``table`` lies in ``day``."""
    lo, hi = day_bounds(day)
    names = [f"{table}_p{n}" for n in range(lo // chunk_us, hi // chunk_us)]
    query = "SELECT count(*) FROM unnest(%s::text[]) n WHERE to_regclass(n) IS NOT NULL"
    return bool(one_row(conn.execute(query, (names,)))[0])


def _ledger(conn: psycopg.Connection, table: str, day: date) -> dict[str, Any] | None:
    row = conn.execute(
        "SELECT rows, fingerprint, verified_at, dropped_at, exports FROM cold_exports"
        " WHERE table_name = %s AND day = %s",
        (table, day),
    ).fetchone()
    if row is None:
        return None
    return dict(zip(("rows", "fingerprint", "verified_at", "dropped_at", "exports"), row, strict=True))


def export_day(conn: psycopg.Connection, store: ColdStore, table: str, day: date, now_us: int) -> DayOutcome:
    """Export, verify and record one table-day (see module docs). ``conn`` must be in autocommit."""
    rows, fp = fingerprint(conn, table, day)
    written = store.export_day(conn, table, day)
    after = fingerprint(conn, table, day)
    back = store.verify_day(table, day)
    verified = after == (rows, fp) and written.rows == rows and back.rows == rows and back.ok
    conn.execute(
        "INSERT INTO cold_exports (table_name, day, rows, fingerprint, cold_rows, checksum, location, snapshot_id,"
        " format, exported_at, verified_at) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
        " ON CONFLICT (table_name, day) DO UPDATE SET rows = EXCLUDED.rows, fingerprint = EXCLUDED.fingerprint,"
        " cold_rows = EXCLUDED.cold_rows, checksum = EXCLUDED.checksum, location = EXCLUDED.location,"
        " snapshot_id = EXCLUDED.snapshot_id, format = EXCLUDED.format, exported_at = EXCLUDED.exported_at,"
        " verified_at = EXCLUDED.verified_at, exports = cold_exports.exports + 1",
        (table, day, rows, fp, back.rows, back.checksum, back.location, back.snapshot_id, store.format, now_us,
         now_us if verified else None),
    )  # fmt: skip
    detail = "" if verified else f"production {rows}->{after[0]} rows during export, S3 {back.rows}"
    return DayOutcome(table, day.isoformat(), "verified" if verified else "unverified", rows, 0, detail)


def export_closed_days(
    conn: psycopg.Connection,
    store: ColdStore,
    now_us: int,
    *,
    settle_s: float = 3600.0,
    tables: list[str] | None = None,
    progress: Callable[[DayOutcome], None] | None = None,
) -> ColdRun:
    """Export every closed day (ended ``settle_s`` ago) with no verified export yet; report days whose partitions
    were dropped but that hold rows again (late rows after the drop)."""
    run = ColdRun(now_us)
    for table, (tcol, chunk_us, _flavor) in timeseries_tables(conn).items():
        if tables and table not in tables:
            continue
        for day in days_in_production(conn, table, tcol, chunk_us):
            if day_bounds(day)[1] + int(settle_s * 1e6) > now_us:
                continue
            ledger = _ledger(conn, table, day)
            if ledger and ledger["dropped_at"] is not None:
                late = fingerprint(conn, table, day)[0]
                if late:
                    run.outcomes.append(DayOutcome(table, day.isoformat(), "late_after_drop", late))
                continue
            if ledger and ledger["verified_at"] is not None:
                continue
            outcome = export_day(conn, store, table, day, now_us)
            run.outcomes.append(outcome)
            if progress:
                progress(outcome)
    return run


def drop_exported_days(
    conn: psycopg.Connection,
    now_us: int,
    keep_days: int,
    *,
    dry_run: bool = False,
    tables: list[str] | None = None,
) -> ColdRun:
    """Drop production days older than ``keep_days`` (whole UTC days before ``today - keep_days``) whose export the
    ledger holds verified; days without one are kept and reported."""
    if keep_days < 0:
        raise KalshiCtlError(f"production.keep_days must be >= 0, got {keep_days}", exit_code=ExitCode.USAGE)
    run = ColdRun(now_us)
    cutoff = EPOCH + timedelta(days=now_us // US_PER_DAY - keep_days)  # days before this one are old
    for table, (tcol, chunk_us, flavor) in timeseries_tables(conn).items():
        if (tables and table not in tables) or flavor != "partitioned":
            continue
        for day in days_in_production(conn, table, tcol, chunk_us):
            if day >= cutoff:
                continue
            ledger = _ledger(conn, table, day)
            if ledger is None or ledger["verified_at"] is None:
                why = "no export yet" if ledger is None else "export not verified (production changed or S3 differs)"
                run.outcomes.append(DayOutcome(table, day.isoformat(), "kept", 0, 0, why))
                continue
            if ledger["dropped_at"] is not None and not _partitions_of(conn, table, chunk_us, day):
                continue  # only late rows in the default partition: they stay in production (module docs)
            if dry_run:
                run.outcomes.append(DayOutcome(table, day.isoformat(), "would_drop", ledger["rows"]))
                continue
            with conn.transaction():
                dropped = one_row(conn.execute("SELECT kalshi_drop_exported_day(%s, %s, %s)", (table, day, now_us)))[0]
            if dropped < 0 and ledger["dropped_at"] is not None:
                run.outcomes.append(DayOutcome(table, day.isoformat(), "late_after_drop", 0, 0, "rows after the drop"))
            elif dropped < 0:
                run.outcomes.append(
                    DayOutcome(table, day.isoformat(), "refused", 0, 0, "rows arrived since the export: re-export")
                )
            else:
                rows = 0 if ledger["dropped_at"] is not None else ledger["rows"]  # again: empty partitions only
                run.outcomes.append(DayOutcome(table, day.isoformat(), "dropped", rows, dropped))
    return run


def run_export(settings: Settings, *, endpoint_url: str | None = None, tables: list[str] | None = None) -> ColdRun:
    """``kalshictl cold export``: every closed day of production to the cold tier, verified and recorded. Runs as
    the deduplicator role (it writes the ledger); reads ``exporter.s3`` for the destination."""
    from kalshictl import clock
    from kalshictl.config import ProductionTierSettings
    from kalshictl.db.connect import connect
    from kalshictl.research.cold import open_cold_store

    dedup = settings.require("deduplicator")
    tier = settings.production or ProductionTierSettings()
    store = open_cold_store(settings.require("exporter"), endpoint_url=endpoint_url)
    try:
        with connect(dedup.production, autocommit=True) as conn:
            return export_closed_days(conn, store, clock.now_us(), settle_s=tier.export_settle_s, tables=tables)
    finally:
        close = getattr(store, "close", None)
        if close is not None:
            close()


def run_retention(settings: Settings, *, keep_days: int | None = None, dry_run: bool = False) -> ColdRun:
    """Production retention (``kalshictl retention run`` with a deduplicator config): drop days older than
    ``production.keep_days`` whose verified export the ledger holds."""
    from kalshictl import clock
    from kalshictl.config import ProductionTierSettings
    from kalshictl.db.connect import connect

    dedup = settings.require("deduplicator")
    tier = settings.production or ProductionTierSettings()
    keep = tier.keep_days if keep_days is None else keep_days
    with connect(dedup.production, autocommit=True) as conn:
        return drop_exported_days(conn, clock.now_us(), keep, dry_run=dry_run)


def status(settings: Settings) -> list[dict[str, Any]]:
    """The ledger, newest day first."""
    from psycopg.rows import dict_row

    from kalshictl.db.connect import connect

    with (
        connect(settings.require("deduplicator").production, autocommit=True) as conn,
        conn.cursor(row_factory=dict_row) as cur,
    ):
        cur.execute(
            "SELECT table_name, day, rows, cold_rows, checksum, format, exports, exported_at, verified_at, dropped_at,"
            " location FROM cold_exports ORDER BY day DESC, table_name"
        )
        return cur.fetchall()
