"""The gap-trust rule for order-book deltas (docs/deduplicator.md, "The gap-trust rule for order-book deltas").

Deltas are keyed by ``(ticker, exchange_ts, side, price, size_delta, occurrence)``; ``occurrence`` numbers identical
deltas of one market in one millisecond in a gatherer's ordered stream, so the k-th identical delta on every
gatherer maps to one production row and genuine repeats are kept once each.

A gatherer whose stream was *not* continuous around a delta can number it wrongly: a replayed or re-delivered
message (``seq_backwards``, resubscribe, reconnect) makes it count one identical delta twice, producing an
occurrence that never happened (a *shifted-occurrence duplicate*). A missed message only lowers its count, which
is harmless (occurrences are a prefix 0..m-1 and the union with other gatherers is right). So:

1. A delta row is *suspect* when its ``occurrence > 0`` and its gatherer has a ``sequence_gaps`` window on the
   order-book channel (or on every channel, ``'*'``) covering that ticker (``tickers`` holds it, or is NULL = every
   market) whose ``[from_ts - margin, to_ts + margin]`` (open-ended while
   ``to_ts`` is NULL) contains its ``exchange_ts``. Everything else merges with ``ON CONFLICT DO NOTHING``.
   Occurrence 0 is never suspect: seeing an identity at least once proves it happened at least once.
2. For a suspect row (group G = the key without occurrence, occurrence k) every *other* gatherer is asked, in its
   own database, how many copies of G it holds, whether it had a gap there, and whether its stream has passed G's
   time for that ticker. A gatherer with no gap there, at least one copy of G, and later data for that ticker is a
   *witness*; its count n is authoritative.
3. With a witness, the suspect row merges only if ``k < max(n)`` over witnesses (otherwise it is dropped and
   counted as ``rejected``). With no witness (all others gapped, unreachable, or behind), it merges (best effort,
   counted as ``unwitnessed``): with no continuous copy anywhere, the gapped copy is the best evidence there is.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kalshictl.db.rows import one_row_async
from kalshictl.dedup.reader import gap_covers

if TYPE_CHECKING:
    import psycopg

    from kalshictl.config import GathererSource

log = logging.getLogger("kalshictl.dedup.gaps")

Group = tuple[str, int, bool, int, int]  # ticker, exchange_ts, side, price, size_delta
# DELTAS.names order (kalshictl/schema.py): exchange_ts, received_at, ticker, side, price, size_delta, occurrence


def group_of(row: Sequence[Any]) -> Group:
    """The identity of a delta row (production column order) without its occurrence."""
    return (row[2], row[0], row[3], row[4], row[5])


@dataclass
class Testimony:
    """What one other gatherer says about a group."""

    count: int
    gapped: bool
    passed: bool

    @property
    def witness(self) -> bool:
        return self.count > 0 and not self.gapped and self.passed


class Peer:
    """A lazily connected read-only view of one gatherer's database, used to judge suspect deltas."""

    def __init__(self, source: GathererSource, margin_us: int, connect_timeout_s: float = 3.0) -> None:
        self.source = source
        self.name = source.name
        self.margin_us = margin_us
        self.connect_timeout_s = connect_timeout_s
        self._conn: psycopg.AsyncConnection | None = None
        self._lock = asyncio.Lock()

    async def testify(self, groups: Sequence[Group]) -> dict[Group, Testimony] | None:
        """Testimony for each group, or None if this gatherer's database cannot be asked right now."""
        import psycopg

        from kalshictl.db.connect import connect_async
        from kalshictl.errors import DatabaseUnreachable

        async with self._lock:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = await connect_async(self.source.database, autocommit=True)
                out: dict[Group, Testimony] = {}
                m = int(self.margin_us)
                for ticker, ts, side, price, size_delta in groups:
                    cur = await self._conn.execute(
                        "SELECT (SELECT count(*) FROM orderbook_deltas WHERE ticker = %(t)s AND exchange_ts = %(ts)s"
                        "   AND side = %(s)s AND price = %(p)s AND size_delta = %(d)s),"
                        f" EXISTS (SELECT 1 FROM sequence_gaps g WHERE {gap_covers('%(t)s')}"
                        f"   AND %(ts)s >= g.from_ts - {m} AND (g.to_ts IS NULL OR %(ts)s <= g.to_ts + {m})),"
                        " EXISTS (SELECT 1 FROM orderbook_deltas WHERE ticker = %(t)s AND exchange_ts > %(ts)s)"
                        "   OR EXISTS (SELECT 1 FROM tickers WHERE ticker = %(t)s AND exchange_ts > %(ts)s)",
                        {"t": ticker, "ts": ts, "s": side, "p": price, "d": size_delta},
                    )
                    count, gapped, passed = await one_row_async(cur)
                    out[(ticker, ts, side, price, size_delta)] = Testimony(int(count), bool(gapped), bool(passed))
                return out
            except (psycopg.Error, DatabaseUnreachable, OSError) as exc:
                log.info("gap-trust: cannot ask %s (%s)", self.name, str(exc).splitlines()[0] if str(exc) else exc)
                await self.close()
                return None

    async def close(self) -> None:
        if self._conn is not None:
            try:
                await self._conn.close()
            except Exception:
                pass
            self._conn = None


@dataclass
class Verdict:
    """The outcome of judging a batch's suspect deltas."""

    accepted: list[Sequence[Any]]
    rejected: int = 0
    witnessed: int = 0
    unwitnessed: int = 0


async def judge(suspects: Sequence[Sequence[Any]], peers: Sequence[Peer]) -> Verdict:
    """Apply the gap-trust rule to suspect delta rows (production column order without ``gatherer``)."""
    if not suspects:
        return Verdict([])
    groups = sorted({group_of(r) for r in suspects})
    answers = await asyncio.gather(*(p.testify(groups) for p in peers))
    verdict = Verdict([])
    for row in suspects:
        g = group_of(row)
        counts = [a[g].count for a in answers if a is not None and a[g].witness]
        if not counts:
            verdict.unwitnessed += 1
            verdict.accepted.append(row)
        elif row[6] < max(counts):
            verdict.witnessed += 1
            verdict.accepted.append(row)
        else:
            verdict.rejected += 1
    if verdict.rejected:
        log.warning(
            "gap-trust: dropped %d shifted-occurrence delta(s) contradicted by a continuous gatherer", verdict.rejected
        )
    return verdict
