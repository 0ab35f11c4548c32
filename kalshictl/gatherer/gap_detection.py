"""How the router finds lost data: per-sid sequence verdicts of data frames and acks (the ack-seq rule, with
ambiguous acks held as notes until the connection's ack reading is known; docs/gatherer.md "Ack seq"), and the
coverage floor the heartbeat must not pass. A loss found is returned as a :class:`Gap`; the router records it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kalshictl.config import WebSocketSettings
from kalshictl.gatherer.router_state import (
    GAP_CLOCK_SLACK_US,
    ConnState,
    ConnStates,
    Note,
    RouterStats,
    SidState,
    window_start,
)
from kalshictl.gatherer.sequence import ACK_LAST, GAP, OK, ack_verdict
from kalshictl.kalshi.messages import Ack

if TYPE_CHECKING:
    from kalshictl.gatherer.connections import WsConnection
    from kalshictl.gatherer.metrics import GathererMetrics

NOTE_MAX_AGE_US = 300_000_000  # an ambiguous ack older than this no longer dates a loss found by the book digest

log = logging.getLogger("kalshictl.gatherer.router")


@dataclass(slots=True, frozen=True)
class Gap:
    """A loss found on one sid: every market of its subscriptions is untrusted from ``from_ts`` until its fresh
    snapshot arrives (``expected``/``got``: the seqs that showed it; ``rx``: when it was found)."""

    conn: WsConnection
    sid_state: SidState  # the sid the loss was found on (its subscriptions are the markets affected)
    reason: str  # seq_gap | seq_backwards
    from_ts: int
    expected: int | None
    got: int | None
    rx: int


class GapDetector:
    """Sequence verdicts and the ack rule over the connections' sid state; counts what it finds."""

    def __init__(
        self, states: ConnStates, stats: RouterStats, metrics: GathererMetrics, settings: WebSocketSettings
    ) -> None:
        self.states = states
        self.stats = stats
        self.metrics = metrics
        self.settings = settings
        self.book_conns: Sequence[WsConnection] = ()  # the order-book connections, once attached

    def attach(self, book_conns: Sequence[WsConnection]) -> None:
        self.book_conns = book_conns

    def frame(
        self, conn: WsConnection, ss: SidState, verdict: str, prev: int | None, seq: int | None, rx: int
    ) -> Gap | bool:
        """A data frame's verdict: True = keep it, False = drop it (a duplicate), a :class:`Gap` = keep it and
        record the loss before it (the frame's own place in the stream re-bases the sid)."""
        match verdict:
            case "ok":
                self.states[conn].last_in_sequence_rx = rx
                ss.last_rx = rx
                return True
            case "duplicate":
                self.stats.duplicates += 1
                self.metrics.duplicates.inc()
                return False
            case _:
                reason = "seq_gap" if verdict == GAP else "seq_backwards"
                expected = None if prev is None else prev + 1
                gap = Gap(conn, ss, reason, window_start(self.states[conn], ss, rx), expected, seq, rx)
                ss.last_rx = rx
                return gap

    def ack(self, conn: WsConnection, a: Ack, sid: int, seq: int, probe: bool, rx: int) -> list[Gap]:
        """An ``ok``/``unsubscribed`` ack carrying ``sid`` and ``seq`` (``probe``: it answers a seq probe); returns
        the losses it reveals, in the order found."""
        st = self.states[conn]
        ss = st.sids.get(sid)
        if ss is None:
            return []
        gaps: list[Gap] = []
        before = ss.tracker.last
        verdict, ambiguous, mode = ack_verdict(ss.tracker, seq, st.ack_mode)
        if mode != st.ack_mode:
            st.ack_mode = mode
            log.info('%s: acks carry the sid\'s last data seq ("last" reading proven)', conn.name)
            gaps.extend(self._resolve_notes(conn, st, rx))
        if a.type == "unsubscribed":
            st.sids.pop(sid, None)
            return gaps
        if verdict == OK:
            # nothing lost up to the ack (an ambiguous one keeps its note, which bounds the floor below)
            ss.verified = max(ss.verified, rx - GAP_CLOCK_SLACK_US)
        if verdict == GAP:
            self.stats.tail_gaps += 1
            self.metrics.tail_gaps.labels(how="ack").inc()
            expected = None if before is None else before + 1
            gaps.append(Gap(conn, ss, "seq_gap", window_start(st, ss, rx), expected, seq, rx))
        elif ambiguous:
            self.stats.ambiguous_acks += 1
            if ss.note is None or rx - ss.note.rx > NOTE_MAX_AGE_US:  # "last" proves itself long before this
                ss.note = Note(window_start(st, ss, rx), rx, (before or 0) + 1, seq)
        elif verdict == OK and probe:
            ss.note = None if st.ack_mode == ACK_LAST else ss.note
        return gaps

    def _resolve_notes(self, conn: WsConnection, st: ConnState, rx: int) -> list[Gap]:
        """The connection proved "last": every earlier ack at last+1 meant one lost tail frame."""
        gaps = []
        for ss in list(st.sids.values()):
            note, ss.note = ss.note, None
            if note is None:
                continue
            self.stats.tail_gaps += 1
            self.metrics.tail_gaps.labels(how="ack_resolved").inc()
            gaps.append(Gap(conn, ss, "seq_gap", note.from_ts, note.expected, note.received, rx))
        return gaps

    def verified_through_us(self, now: int) -> int:
        """A time before which no loss can still be undetected on a connected order-book sid (``now`` when there is
        none; a disconnected one has its windows recorded already): the coverage heartbeat's floor."""
        out = now
        # An ambiguous ack is a possible loss only until the next lossless probe proves "last" (one interval); a
        # note still unresolved after a few intervals means the exchange reads "own" and no longer holds the floor.
        note_window = int(3 * self.settings.seq_probe_interval_s * 1_000_000)
        for c in self.book_conns:
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
