"""How the router finds lost data and records it: per-sid sequence verdicts, the ack-seq rule (with ambiguous acks
held as notes until the connection's ack reading is known), and the coverage windows a gap opens per subscription
and closes when its last market resynced; plus the coverage floor the heartbeat must not pass.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from kalshictl.gatherer.router_state import GAP_CLOCK_SLACK_US, ORDERBOOK, Cmd, ConnState, Note, SidState
from kalshictl.gatherer.sequence import ACK_LAST, GAP, OK, ack_verdict
from kalshictl.gatherer.shards import SubscriptionWindow
from kalshictl.gatherer.writers import now_us
from kalshictl.kalshi.messages import Ack

if TYPE_CHECKING:
    from kalshictl.gatherer.connections import WsConnection
    from kalshictl.gatherer.shards import Subscription

NOTE_MAX_AGE_US = 300_000_000  # an ambiguous ack older than this no longer dates a loss found by the book digest

log = logging.getLogger("kalshictl.gatherer.router")


class GapDetection:
    """Sequence verdicts, the ack rule and coverage windows.

    A part of :class:`~kalshictl.gatherer.router.Router`: methods over its state (see its ``__init__``).
    """

    def _sid(self, conn: WsConnection, sid: int, channel: str = ORDERBOOK) -> SidState:
        st = self.states[conn]
        ss = st.sids.get(sid)
        if ss is None:
            ss = st.sids[sid] = SidState(sid, channel)
        return ss

    def _seq(self, conn: WsConnection, ss: SidState, verdict: str, prev: int | None, seq: int | None, rx: int) -> bool:
        """Act on a data frame's verdict; False = drop the frame (duplicate)."""
        match verdict:
            case "ok":
                self.states[conn].last_in_sequence_rx = rx
                ss.last_rx = rx
                return True
            case "duplicate":
                self.duplicates += 1
                self.metrics.duplicates.inc()
                return False
            case _:
                reason = "seq_gap" if verdict == GAP else "seq_backwards"
                self._sequence_broken(conn, ss, reason, None if prev is None else prev + 1, seq, rx)
                ss.last_rx = rx
                return True

    def _ack(self, conn: WsConnection, a: Ack, rx: int) -> None:
        cmd = conn.pending.pop(a.id, None) if a.id is not None else None
        if isinstance(cmd, Cmd) and cmd.kind == "probe":
            self.probe_replies += 1
        if a.sid is None:
            return
        if isinstance(cmd, Cmd) and cmd.kind == "subscribe" and cmd.sub is not None:
            self._sub_acked(conn, cmd, a.sid)  # a repeat subscribe merged into an existing sid ("merge")
        elif isinstance(cmd, Cmd) and cmd.kind == "add":
            self._expect_snapshots(cmd.tickers)
        if a.seq is None:
            return
        st = self.states[conn]
        ss = st.sids.get(a.sid)
        if ss is None:
            return
        before = ss.tracker.last
        verdict, ambiguous, mode = ack_verdict(ss.tracker, a.seq, st.ack_mode)
        if mode != st.ack_mode:
            st.ack_mode = mode
            log.info('%s: acks carry the sid\'s last data seq ("last" reading proven)', conn.name)
            self._resolve_notes(conn, rx)
        if a.type == "unsubscribed":
            st.sids.pop(a.sid, None)
            return
        if verdict == OK:
            # nothing lost up to the ack (an ambiguous one keeps its note, which bounds the floor below)
            ss.verified = max(ss.verified, rx - GAP_CLOCK_SLACK_US)
        if verdict == GAP:
            self.tail_gaps += 1
            self.metrics.tail_gaps.labels(how="ack").inc()
            self._sequence_broken(conn, ss, "seq_gap", None if before is None else before + 1, a.seq, rx)
        elif ambiguous:
            self.ambiguous_acks += 1
            if ss.note is None or rx - ss.note.rx > NOTE_MAX_AGE_US:  # "last" proves itself long before this
                ss.note = Note(self._from_ts(st, ss, rx), rx, (before or 0) + 1, a.seq)
        elif verdict == OK and cmd is not None and cmd.kind == "probe":
            ss.note = None if st.ack_mode == ACK_LAST else ss.note

    def _resolve_notes(self, conn: WsConnection, rx: int) -> None:
        """The connection proved "last": every earlier ack at last+1 meant one lost tail frame."""
        st = self.states[conn]
        for ss in list(st.sids.values()):
            note, ss.note = ss.note, None
            if note is None:
                continue
            self.tail_gaps += 1
            self.metrics.tail_gaps.labels(how="ack_resolved").inc()
            self._sequence_broken(conn, ss, "seq_gap", note.expected, note.received, rx, from_ts=note.from_ts)

    def _sequence_broken(
        self,
        conn: WsConnection,
        ss: SidState,
        reason: str,
        expected: int | None,
        seq: int | None,
        rx: int,
        *,
        from_ts: int | None = None,
    ) -> None:
        """Every market of the sid's subscriptions is untrusted until its fresh snapshot arrives."""
        st = self.states[conn]
        n = sum(len(s.tickers) for s in ss.subs)
        if self._log.ok(f"gap:{conn.name}"):
            log.warning(
                "%s sid %d: %s (expected %s, got %s): re-snapshotting %d markets",
                conn.name,
                ss.tracker.sid,
                reason,
                expected,
                seq,
                n,
            )
        if from_ts is None:
            from_ts = self._from_ts(st, ss, rx)
        self._anchor_pending(conn)
        for sub in ss.subs:
            self._open_window(sub, reason, from_ts, rx, sid=ss.tracker.sid, expected=expected, received=seq)
            self.request_snapshots(sub, sorted(sub.tickers))

    @staticmethod
    def _from_ts(st: ConnState, ss: SidState, rx: int) -> int:
        """Where a window of this sid starts: lost frames were sent after the last frame received in sequence *on
        this sid* — the exchange time of its last delta, or (none yet) that frame's receive time less a clock slack.
        (Another sid's later frames say nothing about this one's tail.)"""
        if ss.last_ts:
            return ss.last_ts
        return (ss.last_rx or st.last_in_sequence_rx or rx) - GAP_CLOCK_SLACK_US

    def _orphan(self, conn: WsConnection, ss: SidState) -> bool:
        """A frame of a sid that carries none of our subscriptions (unsubscribed, or a duplicate subscription): its
        data would be a second copy of a stream, so it is dropped, and the sid is unsubscribed (once)."""
        if self.shards is None or ss.subs:
            return False
        self.orphan_frames += 1
        self.metrics.stray_frames.inc()
        st = self.states[conn]
        sid = ss.tracker.sid
        if (sid, None) not in st.strays_removed:
            st.strays_removed.add((sid, None))
            log.warning(
                "%s: frames on sid %d, which carries none of our subscriptions: unsubscribing it", conn.name, sid
            )
            self.spawn(self._unsubscribe_sid(conn, sid))
        return True

    def _not_left_here(self, conn: WsConnection, ss: SidState, ticker: str) -> bool:
        """A frame of a market placed nowhere: True (dropped) unless the market was removed lately from this sid —
        or from a subscription of this connection not yet acknowledged — whose last frames are still its own."""
        left = self.left_sid.get(ticker)
        if left is None:
            self._unknown(conn, ss, ticker)
            return True
        left_conn, left_sid = left
        if left_conn is conn and left_sid in (None, ss.tracker.sid):
            return False
        self._stray(conn, ss, ticker)
        return True

    def _unknown(self, conn: WsConnection, ss: SidState, ticker: str) -> None:
        """An order-book frame of a market placed nowhere (and not one removed a moment ago, whose last frames come
        from its old sid): dropped and counted, and the market is learned through the one placement
        (``on_unknown_frame``). Placed on this very sid, its later frames are its own; placed elsewhere, this sid's
        copy becomes a stray (:meth:`_stray`)."""
        self.stray_frames += 1
        self.metrics.stray_frames.inc()
        if self._log.ok(f"unknown:{conn.name}"):
            log.warning("%s: %s arrived on sid %d but is placed nowhere: placing it", conn.name, ticker, ss.tracker.sid)
        if self.on_unknown_frame is not None:
            self.on_unknown_frame(ticker)

    def _stray(self, conn: WsConnection, ss: SidState, ticker: str) -> None:
        """An order-book frame of a market from a sid it is not placed on (a second subscription of it, or its old
        sid while it moves): a second copy of its stream, so it is dropped and counted, and the market is deleted
        from that sid (once per sid and connection)."""
        self.stray_frames += 1
        self.metrics.stray_frames.inc()
        st = self.states[conn]
        sid = ss.tracker.sid
        if (sid, ticker) in st.strays_removed:
            return
        st.strays_removed.add((sid, ticker))
        if self._log.ok(f"stray:{conn.name}"):
            log.warning("%s: %s arrived on sid %d, where it is not placed: deleting it there", conn.name, ticker, sid)
        shards = self.shards
        for sub in ss.subs:  # the placement's own bookkeeping holds the market there too: heal it
            if ticker in sub.tickers and shards is not None and shards.sub_of.get(ticker) is not sub:
                sub.tickers.discard(ticker)
                shards.load[sub.conn] -= 1
        params = {"sids": [sid], "action": "delete_markets", "market_tickers": [ticker]}
        self.spawn(conn.send("update_subscription", params, Cmd("stray", tickers=[ticker])))

    def _open_window(
        self,
        sub: Subscription,
        reason: str,
        from_ts: int,
        rx: int,
        *,
        sid: int | None = None,
        expected: int | None = None,
        received: int | None = None,
        tickers: Iterable[str] | None = None,
    ) -> None:
        """One window per subscription per gap; a gap while one is open re-adds markets to it if its row covers
        them from before ``from_ts``. A row recorded over fewer markets (a late subscription's ``outage``, a digest
        mismatch's one market) or from a later time does not: that window is closed now and one over all its
        still-untrusted markets and these, from the earlier start, takes its place (markets untrusted without a
        window row that names them would lose deltas without a record)."""
        markets = set(sub.tickers if tickers is None else tickers)
        if not markets:
            return
        for t in markets:
            self.sync.invalidate(t, rx)
            self.digest.drop(t)
        w = sub.window
        if w is not None:
            if w.from_ts <= from_ts and markets <= w.covered:
                w.awaiting |= markets
                return
            self.gaplog.close(w.window_id, max(rx, w.last_resync))
            sub.window = None
            markets |= w.awaiting
            from_ts = min(from_ts, w.from_ts)
        wid = self.gaplog.open(
            channel=ORDERBOOK,
            reason=reason,
            from_ts=from_ts,
            subscription=sub.name,
            sid=sid if sid is not None else sub.sid,
            tickers=sorted(markets),
            expected_seq=expected,
            received_seq=received,
        )
        sub.window = SubscriptionWindow(wid, reason, markets, from_ts=from_ts, covered=frozenset(markets))

    def _resynced(self, sub: Subscription, tickers: Iterable[str], ts: int) -> None:
        w = sub.window
        if w is None:
            return
        for t in tickers:
            w.awaiting.discard(t)
        w.last_resync = max(w.last_resync, ts)
        if not w.awaiting:
            self.gaplog.close(w.window_id, w.last_resync)
            sub.window = None

    def verified_through_us(self, now: int) -> int:
        """A time before which no loss can still be undetected on a connected order-book sid (``now`` when there is
        none; a disconnected one has its windows recorded already): the coverage heartbeat's floor."""
        out = now
        if self.pool is None:
            return out
        # An ambiguous ack is a possible loss only until the next lossless probe proves "last" (one interval); a
        # note still unresolved after a few intervals means the exchange reads "own" and no longer holds the floor.
        note_window = int(3 * self.settings.seq_probe_interval_s * 1_000_000)
        for c in self.pool.book_conns:
            if not c.connected:
                continue
            for ss in self.states[c].sids.values():
                if not ss.verified or not any(sub.tickers for sub in ss.subs):
                    continue
                floor = ss.verified
                if ss.note is not None and now - ss.note.rx < note_window:
                    floor = min(floor, ss.note.from_ts)
                out = min(out, floor)
        return out

    def record_late(self, tickers: list[str], start: int) -> None:
        """Markets subscribed late (created or re-listed while the lifecycle channel was blind): their books from
        ``start`` until each one's first snapshot are an ``outage`` window of their subscription."""
        if self.shards is None:
            return
        rx = now_us()
        by_sub: dict[Subscription, list[str]] = {}
        for t in tickers:
            sub = self.shards.sub_of.get(t)
            if sub is not None and t in self.sync.awaiting:
                by_sub.setdefault(sub, []).append(t)
        for sub, ts in by_sub.items():
            self._open_window(sub, "outage", start, rx, tickers=ts)
