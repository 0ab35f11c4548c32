"""Series, events and markets from the REST API into production (upsert), on ``sync.market_sync_interval_s``.

Pages are COPYed into a staging table and upserted with ``INSERT ... ON CONFLICT DO UPDATE``. After one full pass,
later passes ask only for what changed (``min_updated_ts``, which ``/series``, ``/events`` and ``/markets`` accept),
from the start of the previous successful pass minus a minute of overlap; that watermark is kept in
``sync_cursors`` (gatherer ``_rest``) so a restart does not force a full pass. The REST client rate-limits itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    import psycopg

    from kalshictl.dedup.metrics import DedupMetrics
    from kalshictl.kalshi.rest import KalshiRest

log = logging.getLogger("kalshictl.dedup.market_sync")

REST_SOURCE = "_rest"
OVERLAP_S = 60

# kind -> (path, item key, page limit, table, key column, [(column, api field, sql type)])
KINDS: dict[str, tuple[str, str, int, str, str, list[tuple[str, str, str]]]] = {
    "series": (
        "/series",
        "series",
        0,
        "series",
        "ticker",
        [("ticker", "ticker", "text"), ("title", "title", "text"), ("category", "category", "text"),
         ("frequency", "frequency", "text")],
    ),
    "events": (
        "/events",
        "events",
        200,
        "events",
        "event_ticker",
        [("event_ticker", "event_ticker", "text"), ("series_ticker", "series_ticker", "text"),
         ("title", "title", "text"), ("sub_title", "sub_title", "text"),
         ("mutually_exclusive", "mutually_exclusive", "boolean")],
    ),
    "markets": (
        "/markets",
        "markets",
        1000,
        "markets",
        "ticker",
        [("ticker", "ticker", "text"), ("event_ticker", "event_ticker", "text"),
         ("market_type", "market_type", "text"), ("status", "status", "text"), ("title", "title", "text"),
         ("open_time", "open_time", "timestamptz"), ("close_time", "close_time", "timestamptz"),
         ("result", "result", "text"), ("price_level_structure", "price_level_structure", "text")],
    ),
}  # fmt: skip


def _value(item: dict[str, Any], field: str, sqltype: str) -> Any:
    value = item.get(field)
    if value in ("", None):
        return None
    if sqltype == "boolean":
        return bool(value)
    return str(value)


async def upsert(pconn: psycopg.AsyncConnection, kind: str, items: list[dict[str, Any]]) -> int:
    """Upsert one page of API objects; returns rows written."""
    if not items:
        return 0
    _, _, _, table, key, cols = KINDS[kind]
    stage = f"_stage_rest_{table}"
    names = [c for c, _, _ in cols]
    async with pconn.transaction():
        defs = ", ".join(f"{c} {t}" for c, _, t in cols)
        await pconn.execute(f"CREATE TEMP TABLE IF NOT EXISTS {stage} ({defs}, data jsonb) ON COMMIT DELETE ROWS")
        async with pconn.cursor().copy(f"COPY {stage} ({', '.join(names)}, data) FROM STDIN") as copy:
            seen: set[str] = set()
            for item in items:
                k = item.get(cols[0][1])
                if not k or k in seen:
                    continue
                seen.add(k)
                row = [_value(item, f, t) for _, f, t in cols]
                await copy.write_row([*row, orjson.dumps(item).decode()])
        sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in [*names[1:], "data"])
        cur = await pconn.execute(
            f"INSERT INTO {table} ({', '.join(names)}, data, updated_at)"
            f" SELECT {', '.join(names)}, data, now() FROM {stage}"
            f" ON CONFLICT ({key}) DO UPDATE SET {sets}, updated_at = now()"
            f" WHERE {table}.data IS DISTINCT FROM EXCLUDED.data"
        )
        return max(cur.rowcount, 0)


async def _watermark(pconn: psycopg.AsyncConnection, kind: str) -> int | None:
    cur = await pconn.execute(
        "SELECT xmin_cursor FROM sync_cursors WHERE gatherer = %s AND table_name = %s", (REST_SOURCE, kind)
    )
    row = await cur.fetchone()
    return int(row[0]) if row and row[0] else None


async def _set_watermark(pconn: psycopg.AsyncConnection, kind: str, started_s: int, rows: int) -> None:
    await pconn.execute(
        "INSERT INTO sync_cursors (gatherer, table_name, xmin_cursor, rows_read, rows_merged)"
        " VALUES (%s, %s, %s, %s, %s)"
        " ON CONFLICT (gatherer, table_name) DO UPDATE SET xmin_cursor = EXCLUDED.xmin_cursor,"
        " rows_read = sync_cursors.rows_read + EXCLUDED.rows_read,"
        " rows_merged = sync_cursors.rows_merged + EXCLUDED.rows_merged, updated_at = now()",
        (REST_SOURCE, kind, started_s, rows, rows),
    )


async def sync_once(
    rest: KalshiRest, pconn: psycopg.AsyncConnection, metrics: DedupMetrics | None = None, *, full: bool = False
) -> dict[str, int]:
    """One pass over series, events and markets; returns rows written per kind."""
    out: dict[str, int] = {}
    for kind, (path, item_key, limit, _, _, _) in KINDS.items():
        started = int(time.time())
        since = None if full else await _watermark(pconn, kind)
        params: dict[str, Any] = {}
        if since:
            params["min_updated_ts"] = max(0, since - OVERLAP_S)
        written = 0
        if limit:
            async for page in rest.paginate(path, item_key, params, limit=limit):
                written += await upsert(pconn, kind, page)
        else:
            body = await rest.get(path, params or None)
            written += await upsert(pconn, kind, list((body or {}).get(item_key) or []))
        await _set_watermark(pconn, kind, started, written)
        if metrics is not None:
            metrics.market_sync_rows.labels(kind).inc(written)
        out[kind] = written
    return out


class MarketSync:
    """Run :func:`sync_once` every ``interval_s`` until stopped (errors are logged and retried next time)."""

    def __init__(
        self, rest: KalshiRest, pconn_factory: Any, interval_s: float, metrics: DedupMetrics, stop: asyncio.Event
    ) -> None:
        self.rest = rest
        self.pconn_factory = pconn_factory
        self.interval_s = interval_s
        self.metrics = metrics
        self.stop = stop
        self.passes = 0
        self.last_result: dict[str, int] | None = None
        self.last_error: str | None = None

    async def run(self) -> None:
        pconn = None
        while not self.stop.is_set():
            try:
                if pconn is None or pconn.closed:
                    pconn = await self.pconn_factory()
                self.last_result = await sync_once(self.rest, pconn, self.metrics)
                self.passes += 1
                self.last_error = None
                log.info("market sync: %s", self.last_result)
            except Exception as exc:  # the API or production failing must not end the service
                self.metrics.market_sync_errors.inc()
                self.last_error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                log.warning("market sync failed: %s", self.last_error)
                if pconn is not None:
                    await pconn.close()
                    pconn = None
            try:
                await asyncio.wait_for(self.stop.wait(), self.interval_s)
            except TimeoutError:
                pass
        if pconn is not None:
            await pconn.close()
