"""Coverage from ``sequence_gaps``: gap windows per gatherer, and production gaps where every gatherer had one.

A gap row is one window of one gatherer on one channel (``'*'`` = every channel, e.g. a restart) over a set of markets
(``tickers``; NULL = every market of the channel). ``sid`` numbers are per connection and per gatherer, so they are
never matched across gatherers. An open window (``to_ts`` NULL) lasts until the end of the report window.

A production gap on (channel C, market X) is the intersection over all gatherers of that gatherer's windows on C (or
``'*'``) that name X (or every market). Trades are recoverable: a window whose trades a REST backfill fetched again
(``recovery = 'recovered'``) is not a loss, so trade windows count only when not recovered; recovered windows are
reported separately. Order-book deltas, ticker updates and lifecycle messages inside a window are lost for good
(books and tickers are re-anchored by snapshots), so those windows count whatever their recovery state. Rows with
``ticker = "*"`` are windows over every market of the channel. The gatherer set is ``sync_cursors`` ∪ gatherers seen
in ``sequence_gaps``, or given explicitly.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kalshictl.research.times import iso

if TYPE_CHECKING:
    import psycopg

Interval = tuple[int, int]
ALL = "*"
RECOVERABLE_CHANNELS = frozenset(("trade",))


@dataclass(frozen=True)
class Gap:
    """One ``sequence_gaps`` row, clipped to the report window."""

    gatherer: str
    gap_id: int
    channel: str
    tickers: tuple[str, ...] | None
    sid: int | None
    reason: str
    from_ts: int
    to_ts: int
    open: bool
    recovery: str = "none"
    subscription: str | None = None

    @property
    def ticker(self) -> str | None:
        """The single market of a one-market window (None otherwise)."""
        return self.tickers[0] if self.tickers is not None and len(self.tickers) == 1 else None

    def covers(self, channel: str, ticker: str, ts: int) -> bool:
        """Whether this window covers ``ticker``'s ``channel`` data at ``ts``."""
        return (
            self.channel in (channel, ALL)
            and (self.tickers is None or ticker in self.tickers)
            and self.from_ts <= ts <= self.to_ts
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "gatherer": self.gatherer,
            "gap_id": self.gap_id,
            "channel": self.channel,
            "subscription": self.subscription,
            "markets": "*" if self.tickers is None else len(self.tickers),
            "ticker": ALL
            if self.tickers is None
            else ",".join(self.tickers[:3]) + ("…" if len(self.tickers) > 3 else ""),
            "sid": self.sid,
            "reason": self.reason,
            "recovery": self.recovery,
            "from_ts": self.from_ts,
            "to_ts": self.to_ts,
            "from": iso(self.from_ts),
            "to": iso(self.to_ts),
            "duration_s": (self.to_ts - self.from_ts) / 1e6,
            "open": self.open,
        }


def lost(g: Gap, channel: str) -> bool:
    """Whether window ``g`` loses ``channel`` data (a recovered window loses no trades)."""
    return not (channel in RECOVERABLE_CHANNELS and g.recovery == "recovered")


def union(intervals: Iterable[Interval]) -> list[Interval]:
    """Merge overlapping or touching intervals."""
    out: list[list[int]] = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def intersect(a: Sequence[Interval], b: Sequence[Interval]) -> list[Interval]:
    """Intersection of two merged interval lists (empty overlaps dropped)."""
    out, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if lo < hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def production_gaps(gaps: Iterable[Gap], gatherers: Iterable[str]) -> list[dict[str, Any]]:
    """Windows where every gatherer lost the same channel's data of the same market (see module docs)."""
    names = sorted(set(gatherers))
    gaps = list(gaps)
    if not names:
        return []
    channels = sorted({g.channel for g in gaps if g.channel != ALL})
    out = []
    for channel in [ALL, *channels]:
        mine = [g for g in gaps if g.channel in (channel, ALL) and (channel == ALL or lost(g, channel))]
        if channel == ALL:
            mine = [g for g in gaps if g.channel == ALL]
        per: dict[str, dict[str, list[Interval]]] = defaultdict(lambda: defaultdict(list))
        tickers: set[str] = set()
        for g in mine:
            for key in g.tickers or (ALL,):
                per[g.gatherer][key].append((g.from_ts, g.to_ts))
                if key != ALL:
                    tickers.add(key)
        everywhere = _common(per, names, ALL, with_all=False)
        wider = [] if channel == ALL else _all_channel_windows(gaps, names)
        for ticker in [ALL, *sorted(tickers)]:
            common = everywhere if ticker == ALL else _common(per, names, ticker, with_all=True)
            for lo, hi in common:
                if ticker != ALL and any(lo >= a and hi <= b for a, b in everywhere):
                    continue  # already reported as a window over every market
                if any(lo >= a and hi <= b for a, b in wider):
                    continue  # already reported as a window over every channel
                out.append(
                    {
                        "channel": channel,
                        "ticker": ticker,
                        "from_ts": lo,
                        "to_ts": hi,
                        "from": iso(lo),
                        "to": iso(hi),
                        "duration_s": (hi - lo) / 1e6,
                        "gatherers": names,
                    }
                )
    return out


def _common(per: dict[str, dict[str, list[Interval]]], names: list[str], ticker: str, *, with_all: bool) -> list:
    common: list[Interval] | None = None
    for name in names:
        mine = union(per[name].get(ticker, []) + (per[name].get(ALL, []) if with_all and ticker != ALL else []))
        common = mine if common is None else intersect(common, mine)
        if not common:
            return []
    return common or []


def _all_channel_windows(gaps: list[Gap], names: list[str]) -> list[Interval]:
    per: dict[str, dict[str, list[Interval]]] = defaultdict(lambda: defaultdict(list))
    for g in gaps:
        if g.channel == ALL and g.tickers is None:
            per[g.gatherer][ALL].append((g.from_ts, g.to_ts))
    return _common(per, names, ALL, with_all=False)


def load_gaps(conn: psycopg.Connection, from_us: int, to_us: int) -> list[Gap]:
    """Gap windows overlapping [from_us, to_us), clipped to it."""
    rows = conn.execute(
        "SELECT gatherer, gap_id, channel, tickers, sid, reason, from_ts, to_ts, recovery, subscription"
        " FROM sequence_gaps WHERE from_ts < %s AND (to_ts IS NULL OR to_ts > %s) ORDER BY gatherer, from_ts, gap_id",
        (to_us, from_us),
    ).fetchall()
    return [
        Gap(
            g,
            gid,
            ch,
            None if t is None else tuple(t),
            sid,
            reason,
            max(f, from_us),
            min(e if e is not None else to_us, to_us),
            e is None,
            rec,
            sub,
        )
        for g, gid, ch, t, sid, reason, f, e, rec, sub in rows
    ]


def known_gatherers(conn: psycopg.Connection) -> list[str]:
    """Gatherers production knows of: sync cursors plus anything that ever reported a gap. Names starting with
    ``_`` are reserved for the deduplicator's own cursors (``_rest``, the market sync; kalshictl/config.py)."""
    rows = conn.execute(
        "SELECT gatherer FROM sync_cursors WHERE left(gatherer, 1) <> '_' "
        "UNION SELECT DISTINCT gatherer FROM sequence_gaps ORDER BY 1"
    ).fetchall()
    return [r[0] for r in rows]


def coverage(
    conn: psycopg.Connection, from_us: int, to_us: int, *, gatherers: Sequence[str] | None = None
) -> dict[str, Any]:
    """The coverage report: per-gatherer gaps and totals, and production gaps."""
    gaps = load_gaps(conn, from_us, to_us)
    names = list(gatherers) if gatherers else known_gatherers(conn)
    summary = []
    for name in names:
        mine = [g for g in gaps if g.gatherer == name]
        summary.append(
            {
                "gatherer": name,
                "gaps": len(mine),
                "open": sum(g.open for g in mine),
                "tickers": len({t for g in mine for t in g.tickers or ()}),
                "all_markets": sum(g.tickers is None for g in mine),
                "recovered": sum(g.recovery == "recovered" for g in mine),
                "failed": sum(g.recovery == "failed" for g in mine),
                "pending": sum(g.recovery == "pending" for g in mine),
                "gap_seconds": sum(g.to_ts - g.from_ts for g in mine) / 1e6,
            }
        )
    prod = production_gaps([g for g in gaps if g.gatherer in set(names)], names)
    recovered = [g.as_dict() for g in gaps if g.recovery == "recovered"]
    return {
        "from": iso(from_us),
        "to": iso(to_us),
        "gatherers": summary,
        "gaps": [g.as_dict() for g in gaps],
        "production_gaps": prod,
        "lost": prod,
        "recovered": recovered,
        "production_gap_free": not prod,
    }


DAY_US = 86_400_000_000


def day_sources(conn: psycopg.Connection, tickers: Sequence[str], from_us: int, to_us: int) -> list[dict[str, Any]]:
    """Per market and UTC day: where its data comes from (docs/research.md, "History").

    ``history`` = only imported rows (trades with ``source = 'historical'``, candlesticks): no order book that day;
    ``live`` = recorded by the gatherers (WebSocket or REST-backfilled trades, order-book deltas); ``both`` = a day
    recorded live that the import also covered.
    """
    rows = conn.execute(
        "WITH t AS (SELECT ticker, exchange_ts / %(d)s AS day, count(*) FILTER (WHERE source = 'historical') AS h,"
        "   count(*) FILTER (WHERE source <> 'historical') AS l, 0::bigint AS c, 0::bigint AS b FROM trades"
        "   WHERE ticker = ANY(%(t)s) AND exchange_ts >= %(lo)s AND exchange_ts < %(hi)s GROUP BY 1, 2"
        " UNION ALL SELECT ticker, (end_ts - 1) / %(d)s, 0, 0, count(*), 0 FROM candlesticks"  # (start, end]
        "   WHERE ticker = ANY(%(t)s) AND end_ts > %(lo)s AND end_ts <= %(hi)s GROUP BY 1, 2"
        " UNION ALL SELECT ticker, exchange_ts / %(d)s, 0, 0, 0, count(*) FROM orderbook_deltas"
        "   WHERE ticker = ANY(%(t)s) AND exchange_ts >= %(lo)s AND exchange_ts < %(hi)s GROUP BY 1, 2)"
        " SELECT ticker, day, sum(h), sum(l), sum(c), sum(b) FROM t GROUP BY 1, 2 ORDER BY 1, 2",
        {"d": DAY_US, "t": list(tickers), "lo": from_us, "hi": to_us},
    ).fetchall()
    out = []
    for ticker, day, hist, live_trades, candles, deltas in rows:
        imported, recorded = bool(hist or candles), bool(live_trades or deltas)
        out.append(
            {
                "ticker": ticker,
                "day": iso(int(day) * DAY_US)[:10],
                "source": "both" if imported and recorded else ("history" if imported else "live"),
                "historical_trades": int(hist),
                "live_trades": int(live_trades),
                "candles": int(candles),
                "book_deltas": int(deltas),
            }
        )
    return out
