"""Order-book reads: nearest snapshot, the deltas after it, REST snapshots in a window.

Each read joins production with the cold tier when given a :class:`~kalshictl.research.cold.ColdReader` (days whose
partitions left production), so a book is the same wherever its rows live (docs/research.md, "Across tiers").
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kalshictl.errors import KalshiCtlError
from kalshictl.research.book import Book, Delta, rebuild

if TYPE_CHECKING:
    import psycopg

    from kalshictl.research.cold import ColdReader

_SNAPSHOT_COLS = "snapshot_ts, exchange_ts, source, gatherer, yes_bids, no_bids"


@dataclass(frozen=True)
class Snapshot:
    """One stored snapshot. ``anchor`` is the instant its book reflects: ``exchange_ts`` when known, else the
    gatherer's receive time ``snapshot_ts``; deltas with ``exchange_ts > anchor`` are applied on top of it."""

    snapshot_ts: int
    exchange_ts: int | None
    source: str
    gatherer: str
    book: Book

    @property
    def anchor(self) -> int:
        return self.exchange_ts if self.exchange_ts is not None else self.snapshot_ts

    def describe(self) -> dict[str, Any]:
        from kalshictl.research.times import iso

        return {
            "snapshot_ts": self.snapshot_ts,
            "snapshot_time": iso(self.snapshot_ts),
            "exchange_ts": self.exchange_ts,
            "source": self.source,
            "gatherer": self.gatherer,
        }


def _snapshot(row: tuple) -> Snapshot:
    snapshot_ts, exchange_ts, source, gatherer, yes_bids, no_bids = row
    return Snapshot(snapshot_ts, exchange_ts, source, gatherer, Book.from_levels(yes_bids, no_bids))


def nearest_snapshot(
    conn: psycopg.Connection,
    ticker: str,
    at_us: int,
    *,
    sources: tuple[str, ...] = ("ws", "rest"),
    cold: ColdReader | None = None,
) -> Snapshot | None:
    """The latest snapshot of ``ticker`` whose anchor is at or before ``at_us`` (any gatherer, either tier)."""
    row = conn.execute(
        f"SELECT {_SNAPSHOT_COLS} FROM orderbook_snapshots "
        "WHERE ticker = %s AND snapshot_ts <= %s AND source = ANY(%s) AND COALESCE(exchange_ts, snapshot_ts) <= %s "
        "ORDER BY snapshot_ts DESC, source DESC, gatherer LIMIT 1",
        (ticker, at_us, list(sources), at_us),
    ).fetchone()
    if cold is not None:
        old = cold.latest_snapshot(ticker, at_us, sources, after_us=row[0] if row else None)
        if old is not None and (row is None or (old[0], old[2]) > (row[0], row[2])):
            row = old
    return _snapshot(row) if row else None


def snapshots_between(
    conn: psycopg.Connection,
    ticker: str,
    from_us: int,
    to_us: int,
    *,
    sources: tuple[str, ...] = ("rest",),
    cold: ColdReader | None = None,
) -> list[Snapshot]:
    """Snapshots of ``ticker`` received in [from_us, to_us], oldest first (either tier)."""
    rows = conn.execute(
        f"SELECT {_SNAPSHOT_COLS} FROM orderbook_snapshots "
        "WHERE ticker = %s AND snapshot_ts BETWEEN %s AND %s AND source = ANY(%s) ORDER BY snapshot_ts, gatherer",
        (ticker, from_us, to_us, list(sources)),
    ).fetchall()
    if cold is not None:
        rows = sorted(set(map(_hashable, rows)) | set(map(_hashable, cold.snapshots(ticker, from_us, to_us, sources))),
                      key=lambda r: (r[0], r[3]))  # fmt: skip
    return [_snapshot(r) for r in rows]


def _hashable(row: tuple) -> tuple:
    """A snapshot row with its level lists as tuples (rows of both tiers are joined as a set)."""
    return (*row[:4], *(tuple(tuple(lv) for lv in levels or ()) for levels in row[4:]))


def iter_deltas(
    conn: psycopg.Connection,
    ticker: str,
    after_us: int,
    until_us: int,
    *,
    batch: int = 20_000,
    cold: ColdReader | None = None,
) -> Iterator[Delta]:
    """Deltas with ``after_us < exchange_ts <= until_us`` in (exchange_ts, side, price, size_delta, occurrence) order,
    streamed through a server-side cursor (needs a connection not in autocommit, or inside a transaction). Days in the
    cold tier are read from it and merged in order; a delta in both tiers (a late copy) counts once."""
    old = cold.deltas(ticker, after_us, until_us) if cold is not None else []
    if old:
        hot = conn.execute(
            "SELECT exchange_ts, side, price, size_delta, occurrence FROM orderbook_deltas "
            "WHERE ticker = %s AND exchange_ts > %s AND exchange_ts <= %s",
            (ticker, after_us, until_us),
        ).fetchall()
        yield from sorted(set(old) | set(map(tuple, hot)))
        return
    with conn.cursor(name="kalshictl_deltas") as cur:
        cur.itersize = batch
        cur.execute(
            "SELECT exchange_ts, side, price, size_delta, occurrence FROM orderbook_deltas "
            "WHERE ticker = %s AND exchange_ts > %s AND exchange_ts <= %s "
            "ORDER BY exchange_ts, side, price, size_delta, occurrence",
            (ticker, after_us, until_us),
        )
        yield from cur


@dataclass
class BookAt:
    """A rebuilt book and where it came from."""

    ticker: str
    at_us: int
    base: Snapshot
    deltas_applied: int
    last_delta_ts: int | None
    book: Book


def book_at(conn: psycopg.Connection, ticker: str, at_us: int, *, cold: ColdReader | None = None) -> BookAt:
    """Rebuild ``ticker``'s book at ``at_us``: nearest earlier WS snapshot (else REST) + deltas in (anchor, at_us]."""
    # WebSocket snapshots have an exact place in the stream (the gatherer anchors them just before the next delta);
    # a REST snapshot's instant is only known to within its request's round trip, so it is the fallback.
    base = nearest_snapshot(conn, ticker, at_us, sources=("ws",), cold=cold) or nearest_snapshot(
        conn, ticker, at_us, cold=cold
    )
    if base is None:
        raise KalshiCtlError(
            f"no order-book snapshot of {ticker} at or before that time",
            hint="check the ticker and the time (production keeps snapshots from each gatherer)",
        )
    count = 0
    last: int | None = None

    def counted() -> Iterator[Delta]:
        nonlocal count, last
        for d in iter_deltas(conn, ticker, base.anchor, at_us, cold=cold):
            count += 1
            last = d[0]
            yield d

    with conn.transaction():
        book = rebuild(base.book, counted())
    return BookAt(ticker, at_us, base, count, last, book)
