"""Series, events and markets from the REST API into production (upsert), on ``sync.market_sync_interval_s``.

Pages are COPYed into a staging table and upserted with ``INSERT ... ON CONFLICT DO UPDATE``. After one full pass,
later passes ask only for what changed (``min_updated_ts``, which ``/series``, ``/events`` and ``/markets`` accept),
from the start of the previous successful pass minus a minute of overlap; that watermark is kept in
``sync_cursors`` (gatherer ``_rest``) so a restart does not force a full pass. The REST client rate-limits itself.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import TYPE_CHECKING, Any

import orjson

from kalshictl.backoff import WALL
from kalshictl.units import now_us

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


_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")  # an escaped NUL (not an escaped backslash + "u0000")
MAX_KEY_LEN = 200  # the longest ticker the exchange accepts in GET /markets/orderbooks


class BadRow(ValueError):
    """An API object that cannot be stored (the reason names the field, never more than a short excerpt)."""


def _text(value: Any, field: str) -> str:
    text = str(value)
    if "\x00" in text:
        raise BadRow(f"{field}: contains NUL")
    return text


def _value(item: dict[str, Any], field: str, sqltype: str) -> Any:
    value = item.get(field)
    if value in ("", None):
        return None
    if sqltype == "boolean":
        if isinstance(value, bool):
            return value
        raise BadRow(f"{field}: expected true/false, got {str(value)[:40]!r}")
    if sqltype == "timestamptz":
        from datetime import datetime

        try:
            parsed = datetime.fromisoformat(str(value))
        except ValueError:
            raise BadRow(f"{field}: not an ISO 8601 time: {str(value)[:40]!r}") from None
        if parsed.tzinfo is None:
            raise BadRow(f"{field}: time without a zone: {str(value)[:40]!r}")
        return parsed
    return _text(value, field)


def prepare(kind: str, item: Any) -> tuple[str, list[Any]]:
    """(key, COPY row) for one API object, or :class:`BadRow` saying why it cannot be stored."""
    _, _, _, _, _, cols = KINDS[kind]
    if not isinstance(item, dict):
        raise BadRow(f"not an object ({type(item).__name__})")
    key = item.get(cols[0][1])
    if not isinstance(key, str) or not key:
        raise BadRow(f"{cols[0][1]}: missing or not a string")
    if len(key) > MAX_KEY_LEN or not key.isprintable():
        raise BadRow(f"{cols[0][1]}: longer than {MAX_KEY_LEN} or not printable: {key[:40]!r}")
    row = [_value(item, f, t) for _, f, t in cols]
    data = orjson.dumps(item).decode()
    if _JSON_NUL.search(data):
        raise BadRow("payload contains NUL (\\u0000), which jsonb cannot store")
    return key, [*row, data]


async def _upsert_rows(pconn: psycopg.AsyncConnection, kind: str, rows: list[list[Any]]) -> int:
    _, _, _, table, key, cols = KINDS[kind]
    stage = f"_stage_rest_{table}"
    names = [c for c, _, _ in cols]
    async with pconn.transaction():
        defs = ", ".join(f"{c} {t}" for c, _, t in cols)
        await pconn.execute(f"CREATE TEMP TABLE IF NOT EXISTS {stage} ({defs}, data jsonb) ON COMMIT DELETE ROWS")
        async with pconn.cursor().copy(f"COPY {stage} ({', '.join(names)}, data) FROM STDIN") as copy:
            for row in rows:
                await copy.write_row(row)
        sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in [*names[1:], "data"])
        cur = await pconn.execute(
            f"INSERT INTO {table} ({', '.join(names)}, data, updated_at)"
            f" SELECT {', '.join(names)}, data, now() FROM {stage}"
            f" ON CONFLICT ({key}) DO UPDATE SET {sets}, updated_at = now()"
            f" WHERE {table}.data IS DISTINCT FROM EXCLUDED.data"
        )
        return max(cur.rowcount, 0)


async def upsert_page(pconn: psycopg.AsyncConnection, kind: str, items: list[Any]) -> tuple[int, int]:
    """Upsert one page of API objects with per-row isolation; returns (rows written, rows rejected).

    A row that cannot be stored (not an object, no key, a bad time, NUL, ...) is logged, counted and skipped; the
    rest of the page lands. Should the database still refuse the page, each row is retried on its own, so one bad
    row never costs its neighbours. A lost connection is not a bad row: it propagates (the pass is retried).
    """
    import psycopg

    rows: list[list[Any]] = []
    seen: set[str] = set()
    rejected = 0
    for item in items:
        try:
            key, row = prepare(kind, item)
        except BadRow as exc:
            rejected += 1
            log.warning("market sync: %s: skipped a row: %s", kind, exc)
            continue
        if key not in seen:
            seen.add(key)
            rows.append(row)
    if not rows:
        return 0, rejected
    try:
        return await _upsert_rows(pconn, kind, rows), rejected
    except psycopg.OperationalError:
        raise
    except psycopg.Error as exc:
        log.warning("market sync: %s: page refused (%s); retrying row by row", kind, str(exc).splitlines()[0])
    written = 0
    for row in rows:
        try:
            written += await _upsert_rows(pconn, kind, [row])
        except psycopg.OperationalError:
            raise
        except psycopg.Error as exc:
            rejected += 1
            log.warning("market sync: %s %r: skipped: %s", kind, row[0], str(exc).splitlines()[0])
    return written, rejected


async def upsert(pconn: psycopg.AsyncConnection, kind: str, items: list[dict[str, Any]]) -> int:
    """Upsert one page of API objects; returns rows written (bad rows skipped, see :func:`upsert_page`)."""
    return (await upsert_page(pconn, kind, items))[0]


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
    """One pass over series, events and markets; returns rows written per kind and ``rejected`` (bad rows skipped)."""
    out: dict[str, int] = {}
    rejected = 0
    for kind, (path, item_key, limit, _, _, _) in KINDS.items():
        started = now_us() // 1_000_000
        since = None if full else await _watermark(pconn, kind)
        params: dict[str, Any] = {}
        if since:
            params["min_updated_ts"] = max(0, since - OVERLAP_S)
        written = 0
        paged = rest.paginate(path, item_key, params, limit=limit) if limit else None
        pages = paged or _one_page(rest, path, item_key, params)
        async for page in pages:
            w, r = await upsert_page(pconn, kind, page)
            written += w
            rejected += r
        await _set_watermark(pconn, kind, started, written)
        if metrics is not None:
            metrics.market_sync_rows.labels(kind).inc(written)
        out[kind] = written
    out["rejected"] = rejected
    return out


async def _one_page(rest: KalshiRest, path: str, item_key: str, params: dict[str, Any]) -> Any:
    body = await rest.get(path, params or None)
    items = body.get(item_key) if isinstance(body, dict) else None
    yield list(items) if isinstance(items, list) else []


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
            await WALL(self.interval_s, self.stop)
        if pconn is not None:
            await pconn.close()
