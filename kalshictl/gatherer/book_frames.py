"""Order-book frames: deltas and snapshots into rows, the held-book digest that reveals a lost tail frame (and checks
REST books of quiet markets), and the anchoring of WebSocket snapshots to the stream (see ``SNAPSHOT_ANCHOR_WAIT_S``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from kalshictl.gatherer.coverage_windows import CoverageWindows
from kalshictl.gatherer.gap_detection import Gap, GapDetector
from kalshictl.gatherer.occurrence import OccurrenceCounter
from kalshictl.gatherer.router_state import ConnStates, RouterStats
from kalshictl.gatherer.sequence import BookDigest, MarketSync, book_digest
from kalshictl.gatherer.stray_frames import StrayFrames
from kalshictl.kalshi.messages import OrderbookDelta, OrderbookSnapshot
from kalshictl.schema import SnapshotRow
from kalshictl.units import PRICE_MAX

if TYPE_CHECKING:
    from kalshictl.gatherer.connections import WsConnection
    from kalshictl.gatherer.metrics import GathererMetrics
    from kalshictl.gatherer.shards import Shards, Subscription
    from kalshictl.gatherer.writers import TableWriter

# a WS snapshot waiting for its anchor: (its row, exchange_ts still None; its connection; the connection's last exchange
# ts at receipt; rx)
PendingSnapshot = tuple[SnapshotRow, "WsConnection", int, int]


def book_row_fields(yes: list[tuple[int, int]], no: list[tuple[int, int]]) -> tuple[str, str, str, str, Any, Any, Any]:
    """JSONB level arrays and best bid/ask/spread of a book given as YES and NO bids (ascending, own-leg prices)."""
    yes_asks = sorted((PRICE_MAX - p, s) for p, s in no)
    no_asks = sorted((PRICE_MAX - p, s) for p, s in yes)
    best_bid = yes[-1][0] if yes else None
    best_ask = PRICE_MAX - no[-1][0] if no else None
    spread = best_ask - best_bid if best_bid is not None and best_ask is not None else None
    dump = orjson.dumps
    return (
        dump(yes).decode(),
        dump(yes_asks).decode(),
        dump(no).decode(),
        dump(no_asks).decode(),
        best_bid,
        best_ask,
        spread,
    )


class BookFrames:
    """Per-market book state: the held-book digest, trust (``sync``: shared with the windows and the commands),
    occurrence numbers and snapshots waiting for their anchor. A delta in, a row or nothing out."""

    def __init__(
        self,
        states: ConnStates,
        stats: RouterStats,
        metrics: GathererMetrics,
        sync: MarketSync,
        digest: BookDigest,
        snapshot_requested: dict[str, float],
        detector: GapDetector,
        strays: StrayFrames,
        windows: CoverageWindows,
        record_gap: Callable[[Gap], None],
        deltas: TableWriter,
        snapshots: TableWriter,
    ) -> None:
        self.states = states
        self.stats = stats
        self.metrics = metrics
        self.sync = sync
        self.digest = digest
        self.occ = OccurrenceCounter()
        self.snapshot_requested = snapshot_requested  # ticker -> when its snapshot was asked for (monotonic s)
        self.detector = detector
        self.strays = strays
        self.windows = windows
        self.record_gap = record_gap  # a loss found on the frame's sid is recorded before the frame is used
        self._deltas = deltas
        self._snaps = snapshots
        self.shards: Shards | None = None  # the placement, once attached
        # WS snapshots wait for their anchor: ticker -> [(row fields, conn, last exchange ts at receipt, rx)]
        self._pending_snaps: dict[str, list[PendingSnapshot]] = {}

    def attach(self, shards: Shards) -> None:
        self.shards = shards

    def delta(self, conn: WsConnection, d: OrderbookDelta, rx: int) -> None:
        st = self.states[conn]
        ss = st.sids.get(d.sid)
        if ss is None:
            ss = st.sid_state(d.sid)
        if not ss.subs and self.strays.orphan(conn, ss):
            return
        tracker = ss.tracker
        prev = tracker.last
        seq = d.seq
        if prev is not None and seq == prev + 1:
            # the next seq of the sid (nearly every frame): SeqTracker.check's "ok" and GapDetector.frame's "ok"
            # branch, inline (tests/gatherer/test_hot_path.py holds the two to the same state)
            tracker.last = seq
            st.last_in_sequence_rx = rx
            ss.last_rx = rx
        else:
            verdict = self.detector.frame(conn, ss, tracker.check(seq), prev, seq, rx)
            if verdict is False:
                return
            if verdict is not True:
                self.record_gap(verdict)
        ticker = d.ticker
        shards = self.shards
        if shards is not None:
            placed = shards.sub_of.get(ticker)
            if placed is None:
                if self.strays.not_left_here(conn, ss, ticker):
                    return
            elif placed.sid != d.sid or placed.conn is not conn:
                self.strays.stray(conn, ss, ticker)
                return
        ts = d.exchange_ts
        if ts is None:  # ts_ms is optional in the AsyncAPI: the receive time stands in (docs/gatherer.md)
            ts = rx
            self.stats.no_ts_deltas += 1
        if ss.last_ts > ss.verified:
            ss.verified = ss.last_ts  # this frame arrived in sequence: everything the sid sent before it did too
        if ts > ss.last_ts:
            ss.last_ts = ts
        if ts > st.last_exchange_ts:
            st.last_exchange_ts = ts
            stats = self.stats
            if ts > stats.last_exchange_ts:
                stats.last_exchange_ts = ts
        pending_snaps = self._pending_snaps
        if pending_snaps:
            pending = pending_snaps.pop(ticker, None)
            if pending is not None:
                for fields, _conn, _last, _rx in pending:
                    self._store_snapshot(fields, ts - 1)  # every delta after the snapshot is at or after ts
        side = d.side
        price = d.price
        size = d.size_delta
        self.digest.apply(ticker, side, price, size)
        occurrence = self.occ.next(ticker, ts, side, price, size)
        sync = self.sync
        if (ticker in sync.awaiting or ticker in sync.cutoff) and not sync.accept_delta(ticker, ts):
            self.stats.dropped_resync += 1
            return
        # DeltaRow's fields (kalshictl/schema.py) as a plain tuple: a NamedTuple's constructor would cost ~0.3 µs here
        self._deltas.add((ts, rx, ticker, side, price, size, occurrence, seq, d.sid))

    def snapshot(self, conn: WsConnection, s: OrderbookSnapshot, rx: int) -> None:
        st = self.states[conn]
        ss = st.sid_state(s.sid)
        if self.strays.orphan(conn, ss):
            return
        prev = ss.tracker.last
        verdict = self.detector.frame(conn, ss, ss.tracker.check_snapshot(s.seq), prev, s.seq, rx)
        if verdict is False:
            return
        if verdict is not True:
            self.record_gap(verdict)
        sub = self.shards.sub_of.get(s.ticker) if self.shards is not None else None
        if sub is None and self.shards is not None and self.strays.not_left_here(conn, ss, s.ticker):
            return
        if sub is not None and (sub.sid != s.sid or sub.conn is not conn):
            self.strays.stray(conn, ss, s.ticker)
            return
        cut = max(rx, st.last_exchange_ts)
        digest = book_digest(s.yes, s.no)
        held = self.digest.get(s.ticker)
        if held is not None and held != digest and s.ticker not in self.sync.awaiting and sub is not None:
            # the held book disagrees with the exchange's: a delta was lost without a seq trace (a tail frame)
            self.stats.digest_mismatches += 1
            self.metrics.tail_gaps.labels(how="digest").inc()
            note = ss.note
            from_ts = note.from_ts if note is not None else cut - 60_000_000
            self.windows.open(sub, "seq_gap", from_ts, rx, sid=s.sid, tickers=[s.ticker])
        if sub is not None:
            self.digest.set(s.ticker, digest)
        self.snapshot_requested.pop(s.ticker, None)
        since = self.sync.on_snapshot(s.ticker, cut)
        if since is not None and sub is not None:
            w = sub.window
            if w is not None and s.ticker in w.awaiting and isinstance(since, int):
                self.stats.resync_us.append(rx - since)  # untrusted time after a gap (not a first snapshot)
            self.windows.resynced(sub, (s.ticker,), cut)
        yes_bids, yes_asks, no_bids, no_asks, best_bid, best_ask, spread = book_row_fields(s.yes, s.no)
        fields = SnapshotRow(
            snapshot_ts=rx,
            exchange_ts=None,  # the anchor, set when the stream places it (below)
            ticker=s.ticker,
            source="ws",
            yes_bids=yes_bids,
            yes_asks=yes_asks,
            no_bids=no_bids,
            no_asks=no_asks,
            best_yes_bid=best_bid,
            best_yes_ask=best_ask,
            spread=spread,
            sid=s.sid,
            seq=s.seq,
        )
        self._pending_snaps.setdefault(s.ticker, []).append((fields, conn, st.last_exchange_ts, rx))

    def suspect(
        self, ticker: str, yes: list[tuple[int, int]], no: list[tuple[int, int]], asked_rx: int
    ) -> Subscription | None:
        """A REST book of a market: its subscription when its sid was quiet since before the request and the held
        book differs (the caller asks the exchange for a stream-ordered snapshot, which settles it: see
        :meth:`snapshot`); else None."""
        if self.shards is None:
            return None
        held = self.digest.get(ticker)
        sub = self.shards.sub_of.get(ticker)
        if held is None or sub is None or sub.sid is None or ticker in self.sync.awaiting:
            return None
        ss = self.states[sub.conn].sids.get(sub.sid)
        if ss is None or ss.last_rx >= asked_rx - 2_000_000:
            return None  # frames in flight: the REST book may be ahead of the stream
        if book_digest(yes, no) != held:
            self.stats.rest_suspects += 1
            self.metrics.tail_gaps.labels(how="rest_suspect").inc()
            return sub
        return None

    def forget(self, ticker: str) -> None:
        """A market left the placement: its book state goes; a snapshot of it still waiting is stored now."""
        self.sync.forget(ticker)
        self.digest.drop(ticker)
        self.occ.forget(ticker)
        self.snapshot_requested.pop(ticker, None)
        for fields, _c, _last, rx in self._pending_snaps.pop(ticker, []):
            self._store_snapshot(fields, rx)

    # A WebSocket snapshot carries no exchange time. Its exact place in the exchange's history is known from the
    # stream: every later delta of the market comes after it. So the row is held until the market's next delta
    # arrives and stored with exchange_ts = that delta's time - 1 µs (``book`` applies deltas with exchange_ts >
    # anchor). If no delta follows within ``SNAPSHOT_ANCHOR_WAIT_S`` the receive time is a safe anchor (a later delta
    # is generated after it). After a sequence gap the last exchange time seen before the snapshot is used.
    SNAPSHOT_ANCHOR_WAIT_S = 2.0

    def _store_snapshot(self, row: SnapshotRow, anchor: int | None) -> None:
        self._snaps.add(row._replace(exchange_ts=anchor))

    def anchor_pending(self, conn: WsConnection) -> None:
        """The connection's stream broke (gap, disconnect): its waiting snapshots are anchored at the last exchange
        time seen before each arrived."""
        for ticker in [t for t, items in self._pending_snaps.items() if any(c is conn for _, c, _, _ in items)]:
            keep = []
            for fields, c, last, rx in self._pending_snaps.pop(ticker):
                if c is conn:
                    self._store_snapshot(fields, min(last, rx) if last else None)
                else:
                    keep.append((fields, c, last, rx))
            if keep:
                self._pending_snaps[ticker] = keep

    def flush_pending_snapshots(self, now: int, *, force: bool = False) -> int:
        """Store snapshots no delta followed within the anchor wait (all of them with ``force``); returns how many."""
        wait_us = int(self.SNAPSHOT_ANCHOR_WAIT_S * 1_000_000)
        stored = 0
        for ticker in list(self._pending_snaps):
            due: list[PendingSnapshot] = []
            rest: list[PendingSnapshot] = []
            for item in self._pending_snaps[ticker]:
                (due if force or now - item[3] >= wait_us else rest).append(item)
            for fields, _c, _last, rx in due:
                self._store_snapshot(fields, rx)
                stored += 1
            if rest:
                self._pending_snaps[ticker] = rest
            else:
                del self._pending_snaps[ticker]
        return stored
