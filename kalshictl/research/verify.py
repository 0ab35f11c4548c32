"""``book verify``: replay a window and compare every REST snapshot with the rebuilt book.

A REST snapshot's ``snapshot_ts`` is the gatherer's receive time, not an exchange time, so the exchange state it shows
lies somewhere near it. A snapshot *matches* when the rebuilt book equals it at any millisecond boundary within
``±tolerance`` of ``snapshot_ts`` (books between deltas of one millisecond are never candidates: that order is not
stored). A snapshot that matches no candidate is a mismatch, reported with the window
``(last verified instant, snapshot_ts]`` in which data is missing or extra and the levels no candidate explains,
compared with the closest candidate (fewest differing levels, then the latest at or before ``snapshot_ts``: a
response shows a state from before it arrived).

The replay is then re-aligned by adding ``snapshot - closest candidate`` (deltas are additive), so each gap is reported
once and later windows are judged on their own. If that candidate was not the true instant (many deltas in the
tolerance window), the next snapshot mismatches on the levels they touched; before reporting it, the other candidates
of the previous mismatch are tried as alignments, and one that makes this snapshot match is adopted silently.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kalshictl.errors import ExitCode, KalshiCtlError
from kalshictl.research.book import Book, Delta, LevelDiff, diff, group_by_ms
from kalshictl.research.times import iso

if TYPE_CHECKING:
    import psycopg

    from kalshictl.research.book_query import Snapshot
    from kalshictl.research.cold import ColdReader

DEFAULT_TOLERANCE_US = 250_000
MAX_NEGATIVE_REPORTED = 50


@dataclass
class Mismatch:
    """A REST snapshot that equals no rebuilt book within the tolerance."""

    snapshot_ts: int
    gatherer: str
    window_from: int
    window_to: int
    rebuilt_at: int
    diffs: list[LevelDiff]
    gaps: list[dict[str, Any]] = field(default_factory=list)  # recorded windows over (window_from, window_to]

    def as_dict(self) -> dict[str, Any]:
        return {
            "snapshot_ts": self.snapshot_ts,
            "snapshot_time": iso(self.snapshot_ts),
            "gatherer": self.gatherer,
            "window_from": self.window_from,
            "window_to": self.window_to,
            "window": f"({iso(self.window_from)}, {iso(self.window_to)}]",
            "rebuilt_at": self.rebuilt_at,
            "diffs": [d.as_dict() for d in self.diffs],
            # recorded gap windows of this market's order book overlapping the window: empty = an unrecorded loss
            "recorded_gaps": self.gaps,
            "recorded": bool(self.gaps),
        }


@dataclass
class VerifyReport:
    """Outcome of one verification window."""

    ticker: str
    from_us: int
    to_us: int
    tolerance_us: int
    base: dict[str, Any] | None = None
    checked: int = 0
    matched: int = 0
    deltas_applied: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)
    negative_levels: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def as_dict(self) -> dict[str, Any]:
        return {
            "ticker": self.ticker,
            "from": iso(self.from_us),
            "to": iso(self.to_us),
            "tolerance_ms": self.tolerance_us / 1000,
            "base": self.base,
            "checked": self.checked,
            "matched": self.matched,
            "mismatched": len(self.mismatches),
            "deltas_applied": self.deltas_applied,
            "ok": self.ok,
            "mismatches": [m.as_dict() for m in self.mismatches],
            "negative_levels": self.negative_levels,
        }


def _gap_levels(diffs: list[LevelDiff], candidates: list[tuple[int, Book]]) -> list[LevelDiff]:
    """The differing levels no candidate explains (a level some candidate shows at the snapshot's size may differ
    only by timing); all differences when every level is explained."""
    gap = [d for d in diffs if not any(c.side(d.side == "yes").get(d.price, 0) == d.expected for _ts, c in candidates)]
    return gap or diffs


def _realign_previous(
    previous: tuple[Mismatch, Book, list[tuple[int, Book]], Book],
    book: Book,
    snap: Book,
    candidates: list[tuple[int, Book]],
    report: VerifyReport,
) -> bool:
    """After a mismatch the replay was re-aligned to the closest candidate, which may not have been the true instant.
    If re-aligning to another of that mismatch's candidates makes this snapshot match, switch to it (fixing the earlier
    report) and return True."""
    mismatch, prev_snap, prev_candidates, chosen = previous
    for ts, alt in prev_candidates:
        if alt is chosen:
            continue
        shift = Book()
        for d in diff(chosen, alt):  # chosen - alt, added on top of the chosen alignment
            shift.apply(d.side == "yes", d.price, d.expected - d.rebuilt)
        for _cts, cand in candidates:
            shifted = cand.copy()
            shifted.apply_all((0, True, p, v, 0) for p, v in shift.yes.items())
            shifted.apply_all((0, False, p, v, 0) for p, v in shift.no.items())
            if not diff(snap, shifted):
                book.apply_all((0, True, p, v, 0) for p, v in shift.yes.items())
                book.apply_all((0, False, p, v, 0) for p, v in shift.no.items())
                mismatch.rebuilt_at = ts
                mismatch.diffs = _gap_levels(diff(prev_snap, alt), prev_candidates)
                report.matched += 1
                return True
    return False


def replay_and_compare(
    base: Book,
    anchor_us: int,
    deltas: Iterable[Delta],
    checks: Iterable[Snapshot],
    *,
    tolerance_us: int = DEFAULT_TOLERANCE_US,
    report: VerifyReport,
) -> VerifyReport:
    """Pure replay: ``deltas`` (exchange_ts > anchor, ordered) applied to ``base``; each check compared (see module)."""
    book = base.copy()
    groups: Iterator[tuple[int, list[Delta]]] = group_by_ms(deltas)
    pending: deque[tuple[int, list[Delta]]] = deque()
    exhausted = False
    last_ok = anchor_us
    previous: tuple[Mismatch, Book, list[tuple[int, Book]], Book] | None = None

    def fill(until: int) -> None:
        nonlocal exhausted
        while not exhausted and (not pending or pending[-1][0] <= until):
            nxt = next(groups, None)
            if nxt is None:
                exhausted = True
            else:
                pending.append(nxt)

    def advance(before: int) -> None:
        """Apply to the main book every group with ts < before."""
        fill(before)
        while pending and pending[0][0] < before:
            ts, batch = pending.popleft()
            book.apply_all(batch)
            report.deltas_applied += len(batch)
            for _ts, side, price, _d, _o in batch:
                size = book.side(side).get(price, 0)
                if size < 0 and len(report.negative_levels) < MAX_NEGATIVE_REPORTED:
                    report.negative_levels.append(
                        {"ts": ts, "time": iso(ts), "side": "yes" if side else "no", "price": price, "size": size}
                    )

    for snap in sorted(checks, key=lambda s: s.snapshot_ts):
        t = snap.snapshot_ts
        lo, hi = t - tolerance_us, t + tolerance_us
        advance(lo)
        fill(hi)
        state = book.copy()
        candidates: list[tuple[int, Book]] = [(lo, state.copy())]
        for ts, batch in pending:
            if ts > hi:
                break
            state.apply_all(batch)
            candidates.append((ts, state.copy()))
        report.checked += 1
        scored = [(diff(snap.book, cand), ts, cand) for ts, cand in candidates]
        if any(not d for d, _ts, _c in scored):
            report.matched += 1
            last_ok, previous = t, None
            continue
        if previous is not None and _realign_previous(previous, book, snap.book, candidates, report):
            last_ok, previous = t, None
            continue
        # The closest candidate stands for the true instant: fewest differing levels, then (a response shows a state
        # from before it was received) the latest one at or before snapshot_ts, then the earliest one after it.
        order = sorted(range(len(scored)), key=lambda i: (len(scored[i][0]), scored[i][1] > t, abs(scored[i][1] - t)))
        diffs, at, best = scored[order[0]]
        mismatch = Mismatch(t, snap.gatherer, last_ok, t, at, _gap_levels(diffs, candidates))
        report.mismatches.append(mismatch)
        # Re-align (deltas are additive): the replay plus (snapshot - closest candidate) reproduces the snapshot.
        for d in diffs:
            book.apply(d.side == "yes", d.price, d.expected - d.rebuilt)
        previous = (mismatch, snap.book, candidates, best)
        last_ok = t
    advance(report.to_us + 1)
    return report


def verify(
    conn: psycopg.Connection,
    ticker: str,
    from_us: int,
    to_us: int,
    *,
    tolerance_us: int = DEFAULT_TOLERANCE_US,
    sources: tuple[str, ...] = ("rest",),
    cold: ColdReader | None = None,
) -> VerifyReport:
    """Verify ``ticker`` over [from_us, to_us] against production and, with ``cold``, the cold tier (module docs)."""
    from kalshictl.research.book_query import iter_deltas, nearest_snapshot, snapshots_between

    if to_us < from_us:
        raise KalshiCtlError("--to is before --from", exit_code=ExitCode.USAGE)
    report = VerifyReport(ticker, from_us, to_us, tolerance_us)
    # Base: the latest WS snapshot at or before the window (WS snapshots are consistent with the delta stream),
    # else any snapshot, else the first snapshot inside the window.
    base = nearest_snapshot(conn, ticker, from_us, sources=("ws",), cold=cold) or nearest_snapshot(
        conn, ticker, from_us, cold=cold
    )
    if base is None:
        inside = snapshots_between(conn, ticker, from_us, to_us, sources=("ws", "rest"), cold=cold)
        if not inside:
            raise KalshiCtlError(f"no order-book snapshot of {ticker} at or before {iso(to_us)}")
        base = inside[0]
    report.base = base.describe()
    checks = [
        s
        for s in snapshots_between(conn, ticker, from_us, to_us, sources=sources, cold=cold)
        if (s.snapshot_ts, s.source, s.gatherer) != (base.snapshot_ts, base.source, base.gatherer)
    ]
    with conn.transaction():
        deltas = iter_deltas(conn, ticker, base.anchor, to_us + tolerance_us, cold=cold)
        replay_and_compare(base.book, base.anchor, deltas, checks, tolerance_us=tolerance_us, report=report)
    for m in report.mismatches:
        m.gaps = recorded_gaps(conn, ticker, m.window_from, m.window_to)
    return report


def recorded_gaps(conn: psycopg.Connection, ticker: str, from_us: int, to_us: int) -> list[dict[str, Any]]:
    """Production's gap windows on ``ticker``'s order book (its channel or every channel; ``tickers`` NULL = every
    market) that overlap ``[from_us, to_us]``."""
    rows = conn.execute(
        "SELECT gatherer, channel, reason, from_ts, to_ts, recovery FROM sequence_gaps"
        " WHERE channel IN ('orderbook_delta', '*') AND (tickers IS NULL OR tickers @> ARRAY[%s]::text[])"
        " AND from_ts <= %s AND (to_ts IS NULL OR to_ts >= %s) ORDER BY from_ts",
        (ticker, to_us, from_us),
    ).fetchall()
    return [
        {
            "gatherer": g,
            "channel": ch,
            "reason": r,
            "from": iso(f),
            "to": None if t is None else iso(t),
            "recovery": rec,
        }
        for g, ch, r, f, t, rec in rows
    ]
