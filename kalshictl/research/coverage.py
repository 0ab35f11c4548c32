"""Coverage from ``sequence_gaps``: gaps per gatherer, and production gaps where every gatherer had one.

A gap row names a ticker, or only a ``sid`` (a connection-level gap: disconnect, overflow, a seq gap on a
multi-market subscription). ``sid`` numbers are per connection and per gatherer, so they cannot be matched across
gatherers; a ticker-less gap is therefore treated as covering **every** ticker of its gatherer (conservative: a
production gap may be reported that one gatherer's unrecorded subscription layout would have excluded, never missed).
An open gap (``to_ts`` NULL) lasts until the end of the report window.

A production gap for ticker X is the intersection over all gatherers of (that gatherer's gaps on X ∪ its ticker-less
gaps); ``ticker = "*"`` rows are windows where every gatherer had a ticker-less gap at once. The gatherer set is
``sync_cursors`` ∪ gatherers seen in ``sequence_gaps``, or given explicitly.
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


@dataclass(frozen=True)
class Gap:
    """One ``sequence_gaps`` row, clipped to the report window."""

    gatherer: str
    gap_id: int
    ticker: str | None
    sid: int | None
    reason: str
    from_ts: int
    to_ts: int
    open: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "gatherer": self.gatherer,
            "gap_id": self.gap_id,
            "ticker": self.ticker,
            "sid": self.sid,
            "reason": self.reason,
            "from_ts": self.from_ts,
            "to_ts": self.to_ts,
            "from": iso(self.from_ts),
            "to": iso(self.to_ts),
            "duration_s": (self.to_ts - self.from_ts) / 1e6,
            "open": self.open,
        }


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
    """Windows where every gatherer had a gap for the same ticker (see module docs)."""
    names = sorted(set(gatherers))
    per: dict[str, dict[str, list[Interval]]] = defaultdict(lambda: defaultdict(list))
    tickers: set[str] = set()
    for g in gaps:
        key = g.ticker or ALL
        per[g.gatherer][key].append((g.from_ts, g.to_ts))
        if g.ticker:
            tickers.add(g.ticker)
    if not names:
        return []
    out = []
    for ticker in [ALL, *sorted(tickers)]:
        common: list[Interval] | None = None
        for name in names:
            mine = union(per[name].get(ticker, []) + (per[name].get(ALL, []) if ticker != ALL else []))
            common = mine if common is None else intersect(common, mine)
            if not common:
                break
        for lo, hi in common or []:
            if ticker != ALL and any(lo >= a and hi <= b for a, b in _all_windows(per, names)):
                continue  # already reported as a "*" window
            out.append(
                {
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


def _all_windows(per: dict[str, dict[str, list[Interval]]], names: list[str]) -> list[Interval]:
    common: list[Interval] | None = None
    for name in names:
        mine = union(per[name].get(ALL, []))
        common = mine if common is None else intersect(common, mine)
    return common or []


def load_gaps(conn: psycopg.Connection, from_us: int, to_us: int) -> list[Gap]:
    """Gaps overlapping [from_us, to_us), clipped to it."""
    rows = conn.execute(
        "SELECT gatherer, gap_id, ticker, sid, reason, from_ts, to_ts FROM sequence_gaps "
        "WHERE from_ts < %s AND (to_ts IS NULL OR to_ts > %s) ORDER BY gatherer, from_ts, gap_id",
        (to_us, from_us),
    ).fetchall()
    return [
        Gap(g, gid, t, sid, reason, max(f, from_us), min(e if e is not None else to_us, to_us), e is None)
        for g, gid, t, sid, reason, f, e in rows
    ]


def known_gatherers(conn: psycopg.Connection) -> list[str]:
    """Gatherers production knows of: sync cursors plus anything that ever reported a gap."""
    rows = conn.execute(
        "SELECT gatherer FROM sync_cursors UNION SELECT DISTINCT gatherer FROM sequence_gaps ORDER BY 1"
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
                "tickers": len({g.ticker for g in mine if g.ticker}),
                "connection_level": sum(g.ticker is None for g in mine),
                "gap_seconds": sum(g.to_ts - g.from_ts for g in mine) / 1e6,
            }
        )
    prod = production_gaps([g for g in gaps if g.gatherer in set(names)], names)
    return {
        "from": iso(from_us),
        "to": iso(to_us),
        "gatherers": summary,
        "gaps": [g.as_dict() for g in gaps],
        "production_gaps": prod,
        "production_gap_free": not prod,
    }
