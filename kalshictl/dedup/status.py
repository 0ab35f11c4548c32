"""``kalshictl dedup status``: cursors, lag and row counts per gatherer x table, read from the databases."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kalshictl.clock import now_us as clock_now_us
from kalshictl.db.rows import one_row
from kalshictl.schema import EVENT_TABLES

if TYPE_CHECKING:
    import psycopg

    from kalshictl.config import DedupSettings


def _gatherer_view(conn: psycopg.Connection, cursor: int, clock: str, table: str) -> tuple[int, int | None]:
    """(committed rows past the cursor, oldest clock value among them) in one snapshot."""
    count, oldest = one_row(
        conn.execute(f"SELECT count(*), min({clock}) FROM {table} WHERE txid >= %s::xid8", (str(cursor),))
    )
    return int(count), oldest


def collect_status(settings: DedupSettings) -> dict[str, Any]:
    """Cursors from production plus, for each reachable gatherer, the committed rows not yet merged and the lag."""
    from kalshictl.db.connect import connect
    from kalshictl.dedup.cursors import Cursor
    from kalshictl.errors import DatabaseUnreachable
    from kalshictl.health.thresholds import lag_severity

    now_us = clock_now_us()  # the rows' received_at are on the one clock too
    with connect(settings.production, autocommit=True) as pconn:
        rows = pconn.execute(
            "SELECT gatherer, table_name, instance_id::text, xmin_cursor, rows_read, rows_merged, last_received_at,"
            " updated_at::text FROM sync_cursors"
        ).fetchall()
    cursors = {(r[0], r[1]): Cursor(*r) for r in rows}
    out_rows: list[dict[str, Any]] = []
    gatherers: dict[str, str] = {}
    for g in settings.gatherers:
        gconn = None
        instance = None
        error = None
        try:
            gconn = connect(g.database, autocommit=True)
            instance = one_row(gconn.execute("SELECT instance_id::text FROM gatherer_meta"))[0]
            gatherers[g.name] = "connected"
        except DatabaseUnreachable as exc:
            gatherers[g.name] = "disconnected"
            error = str(exc)
        try:
            for spec in EVENT_TABLES:
                c = cursors.get((g.name, spec.name))
                row: dict[str, Any] = {
                    "gatherer": g.name,
                    "table": spec.name,
                    "cursor": c.xmin if c else None,
                    "rows_read": c.rows_read if c else 0,
                    "rows_merged": c.rows_merged if c else 0,
                    "duplicates": (c.rows_read - c.rows_merged) if c else 0,
                    "pending": None,
                    "lag_s": None,
                    "severity": None,
                    "updated_at": c.updated_at if c else None,
                    "error": error,
                }
                if gconn is not None:
                    start = c.xmin if c and c.instance_id == instance else 0
                    if c and c.instance_id not in (None, instance):
                        row["error"] = "gatherer database rebuilt: cursor restarts from 0"
                    gconn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    pending, oldest = _gatherer_view(gconn, start, spec.clock, spec.name)
                    gconn.execute("COMMIT")
                    lag = 0.0 if oldest is None else max(0.0, (now_us - oldest) / 1e6)
                    row.update(pending=pending, lag_s=round(lag, 3), severity=lag_severity(lag))
                out_rows.append(row)
        finally:
            if gconn is not None:
                gconn.close()
    lags = [r["lag_s"] for r in out_rows if r["lag_s"] is not None]
    rest = [c.as_dict() for (g, _), c in sorted(cursors.items()) if g == "_rest"]
    return {
        "gatherers": gatherers,
        "max_lag_seconds": max(lags) if lags else None,
        "tables": out_rows,
        "market_sync": [{"kind": r["table"], "since": r["xmin_cursor"], "rows": r["rows_merged"],
                         "updated_at": r["updated_at"]} for r in rest],
    }  # fmt: skip
