"""Production read for a replay: every recorded event of a period in exchange-time order, streamed, never loaded.

One server-side cursor per table (``orderbook_deltas``, ``trades``, ``tickers`` with ``source = 'ws'``,
``lifecycle_events``), each ordered by ``exchange_ts``, merged into one stream; memory stays flat whatever the
period's length. Within one timestamp lifecycle events come first, then deltas, trades and ticker updates (production
does not store the exchange's order inside a timestamp). The reads run in one read-only REPEATABLE READ transaction,
so the stream is one consistent view of production even while the deduplicator writes.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

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


_QUERIES: dict[int, str] = {
    DELTA: "SELECT exchange_ts, ticker, side, price, size_delta FROM orderbook_deltas "
    "WHERE exchange_ts > %s AND exchange_ts <= %s{scope} "
    "ORDER BY exchange_ts, ticker, side, price, size_delta, occurrence",
    TRADE: "SELECT exchange_ts, trade_id::text, ticker, price, size, taker_side, is_block_trade FROM trades "
    "WHERE exchange_ts > %s AND exchange_ts <= %s{scope} ORDER BY exchange_ts, trade_id",
    TICKER: "SELECT exchange_ts, ticker, yes_bid, yes_ask, last_price, volume, open_interest, dollar_volume, "
    "dollar_open_interest, yes_bid_size, yes_ask_size, last_trade_size FROM tickers "
    "WHERE exchange_ts > %s AND exchange_ts <= %s AND source = 'ws'{scope} ORDER BY exchange_ts, ticker",
    LIFECYCLE: "SELECT exchange_ts, ticker, event_type, payload FROM lifecycle_events "
    "WHERE exchange_ts > %s AND exchange_ts <= %s{scope} ORDER BY exchange_ts, ticker, event_type, occurrence",
}


def _cursor(conn: psycopg.Connection, kind: int, from_us: int, to_us: int, scope: Scope) -> Iterator[Event]:
    where, args = scope.sql()
    with conn.cursor(name=f"kalshictl_replay_{kind}") as cur:
        cur.itersize = BATCH
        cur.execute(_QUERIES[kind].format(scope=where), (from_us, to_us, *args))
        for row in cur:
            yield row[0], kind, row


def events(
    conn: psycopg.Connection,
    from_us: int,
    to_us: int,
    scope: Scope,
    kinds: Iterable[int] = (LIFECYCLE, DELTA, TRADE, TICKER),
    extra: Iterable[Event] = (),
) -> Iterator[Event]:
    """Every event with ``from_us < exchange_ts <= to_us`` in (exchange_ts, kind) order, plus ``extra`` events
    (already sorted). ``conn`` must not be in autocommit: the cursors live in one read-only transaction."""
    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    streams = [_cursor(conn, kind, from_us, to_us, scope) for kind in sorted(set(kinds))]
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
