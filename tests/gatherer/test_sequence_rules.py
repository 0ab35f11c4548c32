"""The ack-seq rule, the held-book digest, placement and the command bucket as pure functions (no exchange needed)."""

from __future__ import annotations

import asyncio
import time

import pytest

from kalshictl.gatherer.connections import CommandBucket
from kalshictl.gatherer.sequence import (
    ACK_LAST,
    ACK_UNKNOWN,
    DUPLICATE,
    GAP,
    OK,
    STALE,
    BookDigest,
    SeqTracker,
    ack_verdict,
    book_digest,
)
from kalshictl.gatherer.shards import Shards


def tracker(last: int) -> SeqTracker:
    t = SeqTracker(1)
    t.last = last
    return t


@pytest.mark.parametrize(
    ("ack", "mode", "verdict", "ambiguous", "new_mode"),
    [
        (10, ACK_UNKNOWN, OK, False, ACK_LAST),  # only "last" can carry the last data seq: proven
        (11, ACK_UNKNOWN, OK, True, ACK_UNKNOWN),  # "own" without loss, or "last" with one lost frame
        (12, ACK_UNKNOWN, GAP, False, ACK_UNKNOWN),  # a loss under both readings
        (9, ACK_UNKNOWN, STALE, False, ACK_UNKNOWN),
        (10, ACK_LAST, OK, False, ACK_LAST),
        (11, ACK_LAST, GAP, False, ACK_LAST),  # proven "last": one lost tail frame
    ],
)
def test_ack_seq_rule(ack: int, mode: str, verdict: str, ambiguous: bool, new_mode: str) -> None:
    t = tracker(10)
    assert ack_verdict(t, ack, mode) == (verdict, ambiguous, new_mode)
    assert t.last == max(10, ack)  # the next data frame is ack + 1 under both readings


def test_acks_under_own_never_gap_and_data_continues() -> None:
    """An "own" stream: data 1..5, ack 6, data 7, ack 8, ack 9: no gap, no duplicate."""
    t, mode = SeqTracker(1), ACK_UNKNOWN
    for seq in range(1, 6):
        assert t.check(seq) == OK
    verdict, _amb, mode = ack_verdict(t, 6, mode)
    assert verdict == OK and t.check(7) == OK
    assert ack_verdict(t, 8, mode)[0] == OK and ack_verdict(t, 9, mode)[0] == OK
    assert t.check(10) == OK and mode == ACK_UNKNOWN


def test_snapshot_that_consumed_no_seq_is_accepted() -> None:
    t = tracker(7)
    assert t.check_snapshot(7) == OK and t.last == 7  # snapshot_seq "none"
    assert t.check_snapshot(8) == OK and t.last == 8  # "consume"
    assert t.check(8) == DUPLICATE  # a data frame repeating a seq is still a duplicate


def test_book_digest_follows_deltas_and_shows_a_lost_one() -> None:
    yes, no = [(4000, 1000), (4100, 500)], [(5500, 300)]
    d = BookDigest()
    d.set("A", book_digest(yes, no))
    d.apply("A", True, 4100, -500)  # level removed
    d.apply("A", False, 5600, 200)  # level added
    assert d.get("A") == book_digest([(4000, 1000)], [(5500, 300), (5600, 200)])
    d.apply("A", True, 4000, 1)  # ... and a delta the exchange's book has not got (or lost: the other way round)
    assert d.get("A") != book_digest([(4000, 1000)], [(5500, 300), (5600, 200)])
    d.drop("A")
    d.apply("A", True, 4000, 1)  # untrusted markets are not tracked
    assert d.get("A") is None


class _Conn:
    def __init__(self, i: int) -> None:
        self.name = f"ob-{i:03d}"


def test_placement_is_balanced_capped_and_reports_unplaced() -> None:
    conns = [_Conn(i) for i in range(3)]
    sh = Shards(conns, cap=10, subs_per_conn=2)  # type: ignore[arg-type]
    assert sh.capacity == 60
    added = sh.place([f"M{i}" for i in range(70)])
    assert sh.placed == 60 and len(sh.unplaced) == 10
    assert sorted(sh.load.values()) == [20, 20, 20]
    assert all(len(sub.tickers) <= 10 for sub in added)
    assert {sub.name for sub in sh.subs[conns[0]]} == {"ob-000/0", "ob-000/1"}
    removed = sh.remove(["M0", "M1"])
    assert sum(len(v) for v in removed.values()) == 2 and sh.placed == 58
    sh.place(sorted(sh.unplaced))  # freed slots are used again
    assert sh.placed == 60 and len(sh.unplaced) == 8


def test_error_26_on_a_fresh_subscription_lowers_the_cap_and_splits() -> None:
    conns = [_Conn(0)]
    sh = Shards(conns, cap=100, subs_per_conn=4)  # type: ignore[arg-type]
    (sub,) = sh.place([f"M{i}" for i in range(80)])
    new = sh.split(sub)
    assert sh.cap == 40 and len(sub.tickers) == 40 and new is not None and len(new.tickers) == 40
    assert sh.capacity == 160 and sh.placed == 80
    sh.limit_conn(conns[0], 80)  # a merged sid the exchange capped
    assert sh.capacity == 80


async def test_command_bucket_bounds_the_rate() -> None:
    b = CommandBucket(per_minute=600, burst=5)  # 10 a second after a burst of 5
    t0 = time.monotonic()
    for _ in range(10):
        await b.take()
    elapsed = time.monotonic() - t0
    assert 0.4 <= elapsed < 2.0  # 5 at once, 5 more at 10/s
    assert b.last_minute() == 10 and b.sent == 10
    await asyncio.sleep(0)
