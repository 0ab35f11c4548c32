"""The read for a replay: every recorded event of a period in exchange-time order, streamed, never loaded.

Per table (``orderbook_deltas``, ``trades``, ``tickers`` with ``source = 'ws'``, ``lifecycle_events``) one ordered
stream: runs of days still in production through one server-side cursor each, and each day that left production
(production's ``cold_exports`` ledger) read from the cold tier one table-day at a time, joined with production's late
rows of that day (docs/replay.md, "Across tiers"). The streams are merged into one; memory is bounded by one day of
one table whatever the period's length. Within one timestamp lifecycle events come first, then deltas, trades and
ticker updates (production does not store the exchange's order inside a timestamp). The reads run in one read-only
REPEATABLE READ transaction, so the stream is one consistent view of production even while the deduplicator writes.
"""

from __future__ import annotations

import heapq
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

import orjson

from kalshictl.errors import KalshiCtlError, import_extra
from kalshictl.research.cold import cold_days
from kalshictl.research.times import US_PER_DAY, day_bounds, days

if TYPE_CHECKING:
    import psycopg

    from kalshictl.research.cold import ColdStore

EPOCH = date(1970, 1, 1)

# Event kinds, in their order within one timestamp.
LIFECYCLE, DELTA, TRADE, TICKER, GAP_END = range(5)
KIND_CHANNEL = {LIFECYCLE: "lifecycle", DELTA: "orderbook_delta", TRADE: "trade", TICKER: "ticker"}
BATCH = 5_000  # rows fetched per round trip per cursor

# (exchange_ts µs, kind, row)
Event = tuple[int, int, tuple]


@dataclass(frozen=True)
class Scope:
    """Which markets a replay serves: ``markets`` None = every market; ``events`` are their event tickers (lifecycle
    messages of events, e.g. ``event_lifecycle``, are keyed by event ticker)."""

    markets: frozenset[str] | None = None
    events: frozenset[str] = frozenset()

    def allows(self, ticker: str) -> bool:
        return self.markets is None or ticker in self.markets or ticker in self.events

    def sql(self) -> tuple[str, tuple]:
        """A ``WHERE`` fragment limiting ``ticker`` (empty when every market is served)."""
        if self.markets is None:
            return "", ()
        return " AND ticker = ANY(%s)", (sorted(self.markets | self.events),)


def resolve_scope(conn: psycopg.Connection, tickers: Iterable[str] = (), series: Iterable[str] = ()) -> Scope:
    """``--tickers`` and ``--series`` -> a :class:`Scope` (both empty = every market). Series resolve through
    production's ``markets`` and ``events`` metadata."""
    tickers, series = list(tickers), list(series)
    if not tickers and not series:
        return Scope()
    markets = set(tickers)
    if series:
        rows = conn.execute(
            "SELECT m.ticker FROM markets m JOIN events e ON e.event_ticker = m.event_ticker "
            "WHERE e.series_ticker = ANY(%s)",
            (series,),
        ).fetchall()
        markets |= {r[0] for r in rows}
    events = {
        r[0]
        for r in conn.execute(
            "SELECT DISTINCT event_ticker FROM markets WHERE ticker = ANY(%s) AND event_ticker IS NOT NULL",
            (sorted(markets),),
        ).fetchall()
    }
    return Scope(frozenset(markets), frozenset(events))


@dataclass(frozen=True)
class _Read:
    """How one kind of event is read: its table, the row it sends, its order within one timestamp (``C`` collation,
    so both tiers sort alike) and any filter beyond the window and scope."""

    table: str
    columns: tuple[str, ...]  # the event's row; ``exchange_ts`` first
    order: tuple[str, ...]  # after exchange_ts
    source_ws: bool = False  # only rows with source = 'ws'

    def select(self, extra: tuple[str, ...] = ()) -> str:
        return ", ".join("trade_id::text" if c == "trade_id" else c for c in (*self.columns, *extra))

    @property
    def hidden(self) -> tuple[str, ...]:
        """Order columns not in the row (read to sort and to tell copies apart)."""
        return tuple(c for c in self.order if c not in self.columns)

    def sql(self, scope: str, extra: tuple[str, ...] = (), ordered: bool = True) -> str:
        order = ", ".join(f'{c} COLLATE "C"' if c in ("ticker", "event_type") else c for c in self.order)
        ws = " AND source = 'ws'" if self.source_ws else ""
        sql = f"SELECT {self.select(extra)} FROM {self.table} WHERE exchange_ts > %s AND exchange_ts <= %s{ws}{scope}"
        return sql + (f" ORDER BY exchange_ts, {order}" if ordered else "")


_TICKER_ROW = ("exchange_ts", "ticker", "yes_bid", "yes_ask", "last_price", "volume", "open_interest", "dollar_volume",
               "dollar_open_interest", "yes_bid_size", "yes_ask_size", "last_trade_size")  # fmt: skip
_TRADE_ROW = ("exchange_ts", "trade_id", "ticker", "price", "size", "taker_side", "is_block_trade")
READS: dict[int, _Read] = {
    DELTA: _Read("orderbook_deltas", ("exchange_ts", "ticker", "side", "price", "size_delta"),
                 order=("ticker", "side", "price", "size_delta", "occurrence")),
    TRADE: _Read("trades", _TRADE_ROW, order=("trade_id",)),
    TICKER: _Read("tickers", _TICKER_ROW, order=("ticker", "occurrence"), source_ws=True),
    LIFECYCLE: _Read("lifecycle_events", ("exchange_ts", "ticker", "event_type", "payload"),
                     order=("ticker", "event_type", "occurrence", "digest")),
}  # fmt: skip


def _cursor(
    conn: psycopg.Connection, kind: int, name: str, after_us: int, until_us: int, scope: Scope
) -> Iterator[Event]:
    """Production's events of one kind with ``after_us < exchange_ts <= until_us``, through a server-side cursor."""
    where, args = scope.sql()
    with conn.cursor(name=name) as cur:
        cur.itersize = BATCH
        cur.execute(READS[kind].sql(where), (after_us, until_us, *args))
        for row in cur:
            yield row[0], kind, row


def _key(values: tuple) -> tuple:
    """A row as a set member (JSON payloads as their canonical text)."""
    return tuple(orjson.dumps(v, option=orjson.OPT_SORT_KEYS) if isinstance(v, dict | list) else v for v in values)


def _sort_key(read: _Read, row: tuple) -> tuple:
    """(exchange_ts, order columns) of ``row`` = row columns + hidden columns; text compares by code point (C)."""
    names = (*read.columns, *read.hidden)
    return (row[0], *(row[names.index(c)] for c in read.order))


def _cold_day(
    conn: psycopg.Connection, store: ColdStore, kind: int, day: date, after_us: int, until_us: int, scope: Scope
) -> Iterator[Event]:
    """One table-day that left production: the cold tier's rows plus any row production still holds for the day
    (late rows land in its default partition after a drop), each row once, sorted as production's query sorts.
    Memory: one day of one table."""
    pc = import_extra("pyarrow.compute", "export")
    read = READS[kind]
    names = (*read.columns, *read.hidden)
    rows: dict[tuple, tuple] = {}
    data = store.read_day(read.table, day)
    if data.num_rows:  # (a day without rows reads as a table without columns)
        ts = data["exchange_ts"]
        mask = pc.and_(pc.greater(ts, after_us), pc.less_equal(ts, until_us))
        if read.source_ws:
            mask = pc.and_(mask, pc.equal(data["source"], "ws"))
        if scope.markets is not None:
            mask = pc.and_(mask, pc.is_in(data["ticker"], value_set=_strings(sorted(scope.markets | scope.events))))
        for r in data.filter(mask).select(list(names)).to_pylist():
            row = tuple(_cold_value(c, r[c]) for c in names)
            rows.setdefault(_key(row), row)
    del data
    where, args = scope.sql()
    late = conn.execute(read.sql(where, read.hidden, ordered=False), (after_us, until_us, *args)).fetchall()
    for row in late:
        rows.setdefault(_key(tuple(row)), tuple(row))
    n = len(read.columns)
    for row in sorted(rows.values(), key=lambda r: _sort_key(read, r)):
        yield row[0], kind, row[:n]


def _cold_value(column: str, value: Any) -> Any:
    """A cold-tier value in the form production's query returns (JSON payloads are stored as text)."""
    if column == "payload" and isinstance(value, str | bytes):
        return orjson.loads(value)
    return value


def _strings(values: list[str]) -> Any:
    pa = import_extra("pyarrow", "export")
    return pa.array(values, type=pa.string())


def _days_of(from_us: int, to_us: int) -> list[date]:
    """UTC days holding some instant of (from_us, to_us]."""
    if from_us >= to_us:
        return []
    return days(EPOCH + timedelta(days=(from_us + 1) // US_PER_DAY), EPOCH + timedelta(days=to_us // US_PER_DAY))


def cold_plan(conn: psycopg.Connection, from_us: int, to_us: int, kinds: Iterable[int]) -> dict[int, list[date]]:
    """Per kind of event, the days of (from_us, to_us] whose production partitions were dropped (production's
    ``cold_exports`` ledger, docs/deduplicator.md): those days are read from the cold tier."""
    window = set(_days_of(from_us, to_us))
    plan = {k: sorted(window & cold_days(conn, READS[k].table)) for k in kinds}
    return {k: v for k, v in plan.items() if v}


def _stream(
    conn: psycopg.Connection,
    kind: int,
    from_us: int,
    to_us: int,
    scope: Scope,
    cold: list[date],
    store: ColdStore | None,
) -> Generator[Event, None, None]:
    """One kind's events in order: runs of production days through one cursor each, cold days one at a time."""
    segments: list[tuple[date | None, int, int]] = []  # (cold day or None, after, until)
    after = from_us
    for day in cold:
        lo, hi = day_bounds(day)
        if lo - 1 > after:
            segments.append((None, after, lo - 1))
        segments.append((day, max(after, lo - 1), min(to_us, hi - 1)))
        after = hi - 1
    if after < to_us:
        segments.append((None, after, to_us))
    for i, (left, a, b) in enumerate(segments):
        if left is None:
            yield from _cursor(conn, kind, f"kalshictl_replay_{kind}_{i}", a, b, scope)
        else:
            if store is None:
                raise KalshiCtlError(f"{READS[kind].table} {left} left production and no cold tier is configured")
            yield from _cold_day(conn, store, kind, left, a, b, scope)


def events(
    conn: psycopg.Connection,
    from_us: int,
    to_us: int,
    scope: Scope,
    kinds: Iterable[int] = (LIFECYCLE, DELTA, TRADE, TICKER),
    extra: Iterable[Event] = (),
    *,
    store: ColdStore | None = None,
) -> Iterator[Event]:
    """Every event with ``from_us < exchange_ts <= to_us`` in (exchange_ts, kind) order, plus ``extra`` events
    (already sorted). Days that left production are read from ``store`` (:func:`cold_plan`). ``conn`` must not be
    in autocommit: the cursors live in one read-only transaction."""
    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    kinds = sorted(set(kinds))
    plan = cold_plan(conn, from_us, to_us, kinds)
    streams = [_stream(conn, kind, from_us, to_us, scope, plan.get(kind, []), store) for kind in kinds]
    try:
        yield from heapq.merge(*streams, iter(extra), key=lambda e: (e[0], e[1]))
    finally:
        for s in streams:
            s.close()
        conn.rollback()


def gap_windows(conn: psycopg.Connection, from_us: int, to_us: int) -> list[dict[str, Any]]:
    """Windows in [from_us, to_us] that every gatherer failed to record, as ``kalshictl coverage`` reports them
    (docs/research.md): ``{"channel", "ticker" ('*' = every market), "from_ts", "to_ts", ...}``."""
    from kalshictl.research.coverage import known_gatherers, load_gaps, production_gaps

    names = known_gatherers(conn)
    gaps = [g for g in load_gaps(conn, from_us, to_us) if g.gatherer in set(names)]
    return production_gaps(gaps, names)


def gap_ends(windows: Iterable[dict[str, Any]], scope: Scope) -> list[Event]:
    """Where an order-book window ends, a fresh snapshot is due: ``(to_ts, GAP_END, (ticker,))`` sorted."""
    out = {
        (w["to_ts"], GAP_END, (w["ticker"],))
        for w in windows
        if w["channel"] in ("orderbook_delta", "*") and (w["ticker"] == "*" or scope.allows(w["ticker"]))
    }
    return sorted(out)
