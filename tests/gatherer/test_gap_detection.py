"""The router's sequence verdicts on their own: :class:`GapDetector` returns what it found (keep, drop, or a
:class:`Gap` with where the loss starts) and acts on nothing else; the ack rule under both ack readings
(docs/gatherer.md "Ack seq")."""

from __future__ import annotations

from kalshictl.config import WebSocketSettings
from kalshictl.gatherer.connections import ConnectionPool, WsConnection
from kalshictl.gatherer.gap_detection import Gap, GapDetector
from kalshictl.gatherer.metrics import GathererMetrics
from kalshictl.gatherer.router_state import GAP_CLOCK_SLACK_US, ConnStates, RouterStats, SidState
from kalshictl.gatherer.sequence import ACK_LAST, ACK_UNKNOWN
from kalshictl.gatherer.shards import Subscription
from kalshictl.kalshi.messages import Ack


def _detector() -> tuple[GapDetector, WsConnection]:
    metrics = GathererMetrics("t")
    pool = ConnectionPool(
        WebSocketSettings(), "ws://unused", metrics, on_open=print, on_frame=print, on_close=print
    )  # never started: its connections are the real objects the detector keys its state by
    return GapDetector(ConnStates(), RouterStats(), metrics, WebSocketSettings()), pool.book_conns[0]


def _frame(d: GapDetector, conn: WsConnection, ss: SidState, seq: int, rx: int) -> Gap | bool:
    prev = ss.tracker.last
    return d.frame(conn, ss, ss.tracker.check(seq), prev, seq, rx)


def _ack(d: GapDetector, conn: WsConnection, seq: int, rx: int, *, probe: bool = True, kind: str = "ok") -> list[Gap]:
    return d.ack(conn, Ack(type=kind, id=1, sid=2, seq=seq, msg=None), 2, seq, probe, rx)


def test_data_frames_keep_drop_or_report_the_gap_from_the_sids_last_delta() -> None:
    d, conn = _detector()
    ss = d.states[conn].sid_state(2)
    assert _frame(d, conn, ss, 1, 1_000) is True
    assert _frame(d, conn, ss, 2, 2_000) is True and ss.last_rx == 2_000
    assert _frame(d, conn, ss, 2, 2_500) is False and d.stats.duplicates == 1
    ss.last_ts = 1_900  # the exchange time of the sid's last delta (BookFrames sets it)
    gap = _frame(d, conn, ss, 5, 3_000)
    assert gap == Gap(conn, ss, "seq_gap", 1_900, 3, 5, 3_000)
    assert ss.last_rx == 3_000 and ss.tracker.last == 5  # the frame itself re-bases the sid
    back = _frame(d, conn, ss, 4, 4_000)
    assert isinstance(back, Gap) and (back.reason, back.expected, back.got) == ("seq_backwards", 6, 4)


def test_a_gap_before_any_delta_starts_at_the_last_in_sequence_receive_less_the_clock_slack() -> None:
    d, conn = _detector()
    ss = d.states[conn].sid_state(2)
    _frame(d, conn, ss, 1, 10_000_000)
    gap = _frame(d, conn, ss, 3, 12_000_000)
    assert isinstance(gap, Gap) and gap.from_ts == 10_000_000 - GAP_CLOCK_SLACK_US


def test_an_ack_beyond_last_plus_one_is_a_tail_gap_under_either_reading() -> None:
    d, conn = _detector()
    ss = d.states[conn].sid_state(2)
    _frame(d, conn, ss, 5, 1_000)
    (gap,) = _ack(d, conn, 7, 2_000)
    assert (gap.reason, gap.expected, gap.got) == ("seq_gap", 6, 7) and d.stats.tail_gaps == 1
    assert _ack(d, conn, 3, 3_000) == [] and ss.tracker.last == 7  # a stale ack: ignored


def test_an_ambiguous_ack_becomes_a_gap_from_its_note_once_the_connection_proves_last() -> None:
    d, conn = _detector()
    ss = d.states[conn].sid_state(2)
    _frame(d, conn, ss, 5, 1_000)
    ss.last_ts = 900
    assert _ack(d, conn, 6, 2_000) == []  # "own" without loss, or "last" with one lost tail frame
    assert d.stats.ambiguous_acks == 1 and ss.note is not None and ss.note.from_ts == 900
    assert d.states[conn].ack_mode == ACK_UNKNOWN
    _frame(d, conn, ss, 7, 3_000)
    (gap,) = _ack(d, conn, 7, 4_000)  # an ack at the last data seq: only "last" gives that
    assert d.states[conn].ack_mode == ACK_LAST and ss.note is None
    assert (gap.reason, gap.from_ts, gap.expected, gap.got, gap.rx) == ("seq_gap", 900, 6, 6, 4_000)
    assert d.stats.tail_gaps == 1


def test_an_unsubscribed_ack_ends_the_sid() -> None:
    d, conn = _detector()
    ss = d.states[conn].sid_state(2)
    _frame(d, conn, ss, 5, 1_000)
    assert _ack(d, conn, 6, 2_000, kind="unsubscribed") == [] and 2 not in d.states[conn].sids


def test_the_coverage_floor_waits_at_an_unresolved_note() -> None:
    d, conn = _detector()
    d.attach([conn])
    conn.connected = True
    ss = d.states[conn].sid_state(2)
    assert d.verified_through_us(50_000_000) == 50_000_000  # nothing received: nothing to hold back
    ss.subs.append(Subscription("ob-000/0", conn, {"A"}))
    _frame(d, conn, ss, 5, 1_000)
    ss.last_ts = 900
    _ack(d, conn, 6, 40_000_000)  # ambiguous: the floor stays at the note's start while it may be a loss
    assert d.verified_through_us(41_000_000) == 900
    assert d.verified_through_us(40_000_000 + 16_000_000) == 40_000_000 - GAP_CLOCK_SLACK_US  # 3 probe intervals on
