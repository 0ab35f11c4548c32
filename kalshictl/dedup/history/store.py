"""Production writes of the history import: trades (once per ``trade_id``), candlesticks, and checkpoints.

Each page is one transaction: its rows and its checkpoint (the next cursor, or ``done``) commit together, so a killed
import resumes at the page after the last committed one and re-reads nothing it has stored (migrations/production/
020_history.sql). Trades are inserted with the merge's own statement and lock (kalshictl/dedup/merge.py), so a trade
the deduplicator merges from a gatherer at the same time is still stored once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kalshictl.dedup.history.rows import CANDLE_COLUMNS, TRADE_COLUMNS, CandleRow, TradeHistoryRow
from kalshictl.dedup.merge import merge_lock_sql, trade_id_sql
from kalshictl.schema import GATHERER, TRADES

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger("kalshictl.dedup.history")


@dataclass(frozen=True)
class Unit:
    """One resumable piece of work: an endpoint over a scope (market, series or selection; candle period) and a
    time range [range_from, range_to) in Unix seconds."""

    endpoint: str
    scope: str
    range_from: int
    range_to: int


@dataclass
class Checkpoint:
    cursor: str = ""
    done: bool = False


async def load_checkpoints(pconn: psycopg.AsyncConnection) -> dict[Unit, Checkpoint]:
    """Every checkpoint in production (a clear error when migration 020 is missing)."""
    cur = await pconn.execute("SELECT to_regclass('history_checkpoints'), to_regclass('candlesticks')")
    if None in (await cur.fetchone() or (None,)):
        from kalshictl.errors import KalshiCtlError

        raise KalshiCtlError(
            "production lacks the history tables (migration 020)", hint="kalshictl migrate --target production"
        )
    cur = await pconn.execute("SELECT endpoint, scope, range_from, range_to, cursor, done FROM history_checkpoints")
    return {Unit(r[0], r[1], r[2], r[3]): Checkpoint(r[4], r[5]) for r in await cur.fetchall()}


async def _save(pconn: psycopg.AsyncConnection, unit: Unit, cursor: str, done: bool, rows: int, bad: int) -> None:
    await pconn.execute(
        "INSERT INTO history_checkpoints (endpoint, scope, range_from, range_to, cursor, done, rows, rejected)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (endpoint, scope, range_from, range_to) DO UPDATE SET cursor = EXCLUDED.cursor,"
        " done = EXCLUDED.done, rows = history_checkpoints.rows + EXCLUDED.rows,"
        " rejected = history_checkpoints.rejected + EXCLUDED.rejected, updated_at = now()",
        (unit.endpoint, unit.scope, unit.range_from, unit.range_to, cursor, done, rows, bad),
    )


async def save_checkpoint(
    pconn: psycopg.AsyncConnection, unit: Unit, cursor: str, done: bool, rejected: int = 0
) -> None:
    """Record progress of a unit that wrote nothing itself (a listing page)."""
    async with pconn.transaction():
        await _save(pconn, unit, cursor, done, 0, rejected)


_TRADE_STAGE = "_stage_history_trades"
_CANDLE_STAGE = "_stage_history_candles"


async def write_trades(
    pconn: psycopg.AsyncConnection, unit: Unit, rows: list[TradeHistoryRow], cursor: str, done: bool, rejected: int
) -> int:
    """Insert a page of trade rows not yet stored under their ``trade_id`` and advance the checkpoint; returns
    rows inserted."""
    cols = ", ".join(TRADE_COLUMNS)
    async with pconn.transaction():
        inserted = 0
        if rows:
            defs = ", ".join(f"{c.name} {c.sql}" for c in (*TRADES.columns, GATHERER))
            await pconn.execute(f"CREATE TEMP TABLE IF NOT EXISTS {_TRADE_STAGE} ({defs}) ON COMMIT DELETE ROWS")
            async with pconn.cursor().copy(f"COPY {_TRADE_STAGE} ({cols}) FROM STDIN") as copy:
                for row in rows:
                    await copy.write_row(row)
            lock = merge_lock_sql(TRADES)
            if lock:
                await pconn.execute(lock)
            cur = await pconn.execute(trade_id_sql(TRADES, _TRADE_STAGE))
            inserted = max(cur.rowcount, 0)
        await _save(pconn, unit, cursor, done, inserted, rejected)
    return inserted


async def write_candles(
    pconn: psycopg.AsyncConnection, units: list[Unit], rows: list[CandleRow], rejected: int, done: bool = True
) -> int:
    """Upsert candle rows (a still-forming candle read again replaces the earlier copy) and checkpoint ``units``
    (``done`` unless their day is still under way); returns rows inserted or changed."""
    cols = ", ".join(CANDLE_COLUMNS)
    async with pconn.transaction():
        written = 0
        if rows:
            await pconn.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {_CANDLE_STAGE} (LIKE candlesticks) ON COMMIT DELETE ROWS"
            )
            async with pconn.cursor().copy(f"COPY {_CANDLE_STAGE} ({cols}) FROM STDIN") as copy:
                for row in rows:
                    await copy.write_row(row)
            value_cols = [c for c in CANDLE_COLUMNS[3:] if c != "received_at"]
            sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in (*value_cols, "received_at"))
            changed = " OR ".join(f"candlesticks.{c} IS DISTINCT FROM EXCLUDED.{c}" for c in value_cols)
            cur = await pconn.execute(
                f"INSERT INTO candlesticks ({cols}) SELECT DISTINCT ON (ticker, period_minutes, end_ts) {cols}"
                f" FROM {_CANDLE_STAGE} ORDER BY ticker, period_minutes, end_ts"
                f" ON CONFLICT (ticker, period_minutes, end_ts) DO UPDATE SET {sets} WHERE {changed}"
            )
            written = max(cur.rowcount, 0)
        for i, unit in enumerate(units):
            await _save(pconn, unit, "", done, written if i == 0 else 0, rejected if i == 0 else 0)
    return written


def log_rejected(what: str, reason: Any) -> None:
    """A malformed row is logged (the reason names the field) and counted, never fatal."""
    log.warning("history import: %s: skipped a row: %s", what, reason)
