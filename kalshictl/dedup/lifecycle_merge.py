"""Lifecycle events into production: one row per exchange message, whichever gatherers saw it (docs/deduplicator.md).

Kalshi's lifecycle messages carry no time of their own and are repeated with identical content (a market's second
``deactivated``, ``metadata_updated`` sent twice), so a stored row is identified by ``(ticker, event_type, digest)``
plus a time: the message's own time when it has one, else the gatherer's receive time
(:mod:`kalshictl.kalshi.lifecycle_key`). The copies of one message on three gatherers are received within
milliseconds of each other; repeats are apart by the exchange's own spacing, and a gatherer may have missed any of
them (restart, outage).

The rule, per gatherer row, in receive order: it is a copy of the production event with the same key and

* the same time, when the message had its own time, or
* a receive-time stamp within :data:`MATCH_TOLERANCE_US` of it (nearest first), when it had none,

**that no other row of the same gatherer has claimed** (``lifecycle_copies`` remembers every claim). Otherwise it is a
new event. So two identical messages seen by any one gatherer are two events in production, a gatherer that missed
one of them adds nothing, and a copy stamped late by a slow gatherer still finds its event. What the rule cannot tell
apart: two identical messages less than the tolerance apart of which *no* gatherer saw both (each seen by a different
gatherer) are stored once. A row already claimed (a batch read again after a cursor reset) is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psycopg

MATCH_TOLERANCE_US = 5_000_000  # receive-time stamps of one message on different gatherers (measured: < 50 ms)
# claims are kept this long: a gatherer row older than that (a gatherer database restored after a week) finds no claim
# of its own and pairs with the nearest event, which is still right unless it holds identical repeats
COPIES_RETENTION_US = 7 * 86_400_000_000

Key = tuple[str, str, bytes]  # ticker, event_type, digest


@dataclass
class _Event:
    ts: int
    occurrence: int
    untimed: bool  # stamped with a receive time
    claimed: bool  # by a row of the gatherer being merged


def _match(cands: list[_Event], ts: int, untimed: bool, tolerance_us: int) -> _Event | None:
    best: _Event | None = None
    for e in cands:
        if e.claimed or e.untimed != untimed:
            continue
        near = (untimed and abs(e.ts - ts) <= tolerance_us) or e.ts == ts
        if near and (best is None or abs(e.ts - ts) < abs(best.ts - ts)):
            best = e
    return best


async def merge_lifecycle(
    pconn: psycopg.AsyncConnection,
    stage: str,
    cols: tuple[str, ...],
    gatherer: str,
    tolerance_us: int = MATCH_TOLERANCE_US,
) -> int:
    """Merge the staged lifecycle rows of ``gatherer``; returns how many new events were stored. Run under the
    table's merge lock, in the merge transaction."""
    cur = await pconn.execute(
        f"SELECT ticker, event_type, digest, exchange_ts, occurrence, received_at FROM {stage}"
        " ORDER BY received_at, exchange_ts, occurrence"
    )
    rows = await cur.fetchall()
    if not rows:
        return 0
    cur = await pconn.execute(
        "SELECT c.ticker, c.event_type, c.digest, c.copy_ts, c.copy_occurrence FROM lifecycle_copies c"
        f" JOIN {stage} s ON c.ticker = s.ticker AND c.event_type = s.event_type AND c.digest = s.digest"
        " AND c.copy_ts = s.exchange_ts AND c.copy_occurrence = s.occurrence WHERE c.gatherer = %s",
        (gatherer,),
    )
    done = {(t, e, bytes(d), ts, o) for t, e, d, ts, o in await cur.fetchall()}
    cur = await pconn.execute(
        "SELECT p.ticker, p.event_type, p.digest, p.exchange_ts, p.occurrence, p.exchange_ts = p.received_at,"
        " EXISTS (SELECT 1 FROM lifecycle_copies c WHERE c.gatherer = %s AND c.ticker = p.ticker"
        " AND c.event_type = p.event_type AND c.digest = p.digest AND c.event_ts = p.exchange_ts"
        " AND c.event_occurrence = p.occurrence)"
        " FROM lifecycle_events p JOIN (SELECT ticker, event_type, digest, min(exchange_ts) lo, max(exchange_ts) hi"
        f" FROM {stage} GROUP BY 1, 2, 3) s ON p.ticker = s.ticker AND p.event_type = s.event_type"
        " AND p.digest = s.digest WHERE p.exchange_ts BETWEEN s.lo - %s AND s.hi + %s",
        (gatherer, tolerance_us, tolerance_us),
    )
    events: dict[Key, list[_Event]] = {}
    for t, e, d, ts, occ, untimed, claimed in await cur.fetchall():
        events.setdefault((t, e, bytes(d)), []).append(_Event(ts, occ, untimed, claimed))

    # (ticker, event_type, digest, copy_ts, copy_occurrence, occurrence in production)
    new: list[tuple[str, str, bytes, int, int, int]] = []
    # (ticker, event_type, digest, copy_ts, copy_occurrence, event_ts, event_occurrence)
    copies: list[tuple[str, str, bytes, int, int, int, int]] = []
    for t, e, d, ts, occ, rx in rows:
        key = (t, e, bytes(d))
        if (*key, ts, occ) in done:
            continue
        cands = events.setdefault(key, [])
        untimed = ts == rx
        hit = _match(cands, ts, untimed, tolerance_us)
        if hit is None:
            hit = _Event(ts, 1 + max((c.occurrence for c in cands if c.ts == ts), default=-1), untimed, False)
            cands.append(hit)
            new.append((*key, ts, occ, hit.occurrence))
        hit.claimed = True
        copies.append((*key, ts, occ, hit.ts, hit.occurrence))

    if new:
        names = ", ".join(cols)
        sel = ", ".join("n.occurrence" if c == "occurrence" else f"s.{c}" for c in cols)
        await pconn.execute(
            f"INSERT INTO lifecycle_events ({names}) SELECT {sel} FROM {stage} s"
            " JOIN unnest(%s::text[], %s::text[], %s::bytea[], %s::bigint[], %s::int[], %s::int[])"
            " AS n(ticker, event_type, digest, copy_ts, copy_occurrence, occurrence)"
            " ON s.ticker = n.ticker AND s.event_type = n.event_type AND s.digest = n.digest"
            " AND s.exchange_ts = n.copy_ts AND s.occurrence = n.copy_occurrence",
            [list(col) for col in zip(*new, strict=True)],
        )
    if copies:
        await pconn.execute(
            "INSERT INTO lifecycle_copies (gatherer, ticker, event_type, digest, copy_ts, copy_occurrence, event_ts,"
            " event_occurrence) SELECT %s, * FROM unnest(%s::text[], %s::text[], %s::bytea[], %s::bigint[],"
            " %s::int[], %s::bigint[], %s::int[]) ON CONFLICT DO NOTHING",
            [gatherer, *(list(col) for col in zip(*copies, strict=True))],
        )
    return len(new)


async def prune_copies(pconn: psycopg.AsyncConnection, now_us: int, retention_us: int = COPIES_RETENTION_US) -> int:
    """Forget claims on events older than the retention (hourly, with the partition top-up); returns how many."""
    cur = await pconn.execute("DELETE FROM lifecycle_copies WHERE event_ts < %s", (now_us - retention_us,))
    return max(cur.rowcount, 0)
