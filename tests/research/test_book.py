"""Pure order-book rebuild logic and the verify replay (no database)."""

from __future__ import annotations

import random

from kalshictl.research.book import Book, add_difference, diff, rebuild
from kalshictl.research.book_query import Snapshot
from kalshictl.research.verify import VerifyReport, replay_and_compare
from tests.research.synth import T0, simulate


def test_views_and_top_follow_bids_only_semantics():
    book = Book.from_levels([[4100, 1000], [4200, 1300]], [[5600, 1700], [5000, 100]])
    assert book.best_bid(True) == (4200, 1300)
    assert book.best_ask(True) == (4400, 1700)  # 1 - best NO bid 0.5600
    assert book.best_ask(False) == (5800, 1300)  # NO ask = 1 - best YES bid
    assert book.top() == {
        "best_yes_bid": 4200,
        "best_yes_bid_size": 1300,
        "best_yes_ask": 4400,
        "best_yes_ask_size": 1700,
        "spread": 200,
    }
    view = book.as_dict(depth=1)
    assert view["yes_bids"] == [[4200, 1300]] and view["yes_asks"] == [[4400, 1700]]
    assert view["no_bids"] == [[5600, 1700]] and view["no_asks"] == [[5800, 1300]]
    assert Book().top()["spread"] is None


def test_apply_is_exact_and_removes_zero_levels_keeps_transient_negatives():
    book = Book.from_levels([[100, 5]], [])
    book.apply(True, 100, -5)
    assert book.yes == {}
    book.apply(True, 200, -3)  # out-of-order within a millisecond: transiently negative
    assert book.negative_levels() == [("yes", 200, -3)]
    book.apply(True, 200, 3)
    assert book.yes == {} and not book.negative_levels()


def test_book_at_millisecond_boundary_is_order_independent():
    m = simulate(seed=7, n=2000)
    truth = rebuild(m.base, m.deltas)
    rng = random.Random(1)
    shuffled = list(m.deltas)
    # any permutation within each millisecond, and the stored (side, price, size_delta, occurrence) order
    by_ms: dict[int, list] = {}
    for d in shuffled:
        by_ms.setdefault(d[0], []).append(d)
    for group in by_ms.values():
        rng.shuffle(group)
    permuted = [d for ts in sorted(by_ms) for d in by_ms[ts]]
    assert diff(truth, rebuild(m.base, permuted)) == []
    assert diff(truth, rebuild(m.base, sorted(m.deltas))) == []


def test_add_difference_realigns():
    a, b, c = Book({1: 5}, {2: 1}), Book({1: 3, 4: 1}, {}), Book({7: 1}, {})
    add_difference(c, a, b)
    assert c.yes == {1: 2, 4: -1, 7: 1} and c.no == {2: 1}


def _snaps(m):
    return [Snapshot(recv, None, "rest", "g1", book) for recv, _inst, book in m.rest]


def _report(m, tol=250_000):
    return VerifyReport(m.ticker, T0, m.deltas[-1][0], tol)


def test_verify_replay_clean_has_no_mismatch():
    m = simulate(seed=3)
    rep = replay_and_compare(m.base, T0 - 1000, sorted(m.deltas), _snaps(m), report=_report(m))
    assert rep.checked == len(m.rest) > 10
    assert rep.matched == rep.checked and rep.ok and not rep.negative_levels
    assert rep.deltas_applied == len(m.deltas)


def test_verify_replay_zero_tolerance_sees_receive_lag():
    m = simulate(seed=3)
    rep = replay_and_compare(m.base, T0 - 1000, sorted(m.deltas), _snaps(m), tolerance_us=0, report=_report(m, 0))
    assert rep.mismatches  # receive time != exchange instant; the tolerance is what makes the clean run clean


def test_verify_replay_reports_the_gap_window_once():
    m = simulate(seed=5)
    # delete every delta strictly between REST snapshots 4 and 5 (exchange instants), at a level that nets non-zero
    (recv4, inst4, _), (recv5, inst5, _) = m.rest[4], m.rest[5]
    lo, hi = inst4 + 1, inst5 - 1000
    dropped = [d for d in m.deltas if lo <= d[0] <= hi]
    kept = [d for d in m.deltas if not lo <= d[0] <= hi]
    assert dropped and diff(rebuild(m.base, m.deltas), rebuild(m.base, kept))
    rep = replay_and_compare(m.base, T0 - 1000, sorted(kept), _snaps(m), report=_report(m))
    assert len(rep.mismatches) == 1, [x.as_dict() for x in rep.mismatches]
    bad = rep.mismatches[0]
    assert (bad.window_from, bad.window_to) == (recv4, recv5)
    assert bad.window_from <= dropped[0][0] and dropped[-1][0] <= bad.window_to
    assert rep.matched == rep.checked - 1  # re-aligned: later snapshots judged on their own


def test_group_by_ms_batches_consecutive_deltas_of_one_exchange_time():
    from kalshictl.research.book import group_by_ms

    deltas = [(0, True, 10, 1, 0), (0, False, 20, 2, 0), (5, True, 10, -1, 0), (7, True, 30, 4, 0), (7, True, 30, 4, 1)]
    assert list(group_by_ms(deltas)) == [(0, deltas[:2]), (5, deltas[2:3]), (7, deltas[3:])]
    assert list(group_by_ms([])) == []
