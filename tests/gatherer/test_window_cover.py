"""A gap while a subscription's window is open must leave a window row that names every market it made untrusted,
from the gap's start (the chaos run's kill_during_resnapshot lost deltas without a record when a seq gap folded into
a late-subscribed market's one-market ``outage`` window). The router runs on its own: frames are fed to ``handle``
and the windows are read from the gap log's queue (nothing is written)."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools

import orjson

from kalshictl.gatherer.gaps import GapLog, Insert
from kalshictl.gatherer.metrics import GathererMetrics
from kalshictl.gatherer.router import Router
from kalshictl.gatherer.shards import Shards
from kalshictl.gatherer.writers import BatchWriter, WriterSet
from kalshictl.schema import EVENT_TABLES

T0 = 1_800_000_000_000_000


class _BookConn:
    """The connection surface the router uses: commands are remembered under their id (never sent)."""

    kind = "orderbook"
    connected = True
    alive = True

    def __init__(self) -> None:
        self.name = "ob-000"
        self.pending: dict[int, object] = {}
        self.sent: list[tuple[str, dict]] = []
        self._ids = itertools.count(1)

    async def send(self, cmd: str, params: dict, meta: object) -> int:
        i = next(self._ids)
        self.pending[i] = meta
        self.sent.append((cmd, params))
        return i


@dataclasses.dataclass
class _Pool:
    """The pool surface the router takes: its connections."""

    global_conns: list[_BookConn]
    book_conns: list[_BookConn]


def _snap(ticker: str, seq: int) -> bytes:
    msg = {"market_ticker": ticker, "yes_dollars_fp": [["0.4000", "10.00"]], "no_dollars_fp": []}
    return orjson.dumps({"type": "orderbook_snapshot", "sid": 1, "seq": seq, "msg": msg})


def _delta(ticker: str, seq: int, ts_us: int) -> bytes:
    msg = {
        "market_ticker": ticker,
        "price_dollars": "0.4000",
        "delta_fp": "1.00",
        "side": "yes",
        "ts_ms": ts_us // 1000,
    }
    return orjson.dumps({"type": "orderbook_delta", "sid": 1, "seq": seq, "msg": msg})


def _windows(gaplog: GapLog) -> list:
    return [op.window for op in gaplog._ops if isinstance(op, Insert)]


async def test_gap_during_a_late_markets_outage_window_is_recorded_for_every_market() -> None:
    async def no_db():  # pragma: no cover - the log is never started
        raise AssertionError("not written in this test")

    writers = WriterSet({s.name: BatchWriter(s, no_db) for s in EVENT_TABLES})
    gaplog = GapLog("g", no_db)
    router = Router("g", writers, GathererMetrics("g"), gaplog)
    conn = _BookConn()
    shards = Shards([conn], cap=10, subs_per_conn=1)  # type: ignore[list-item]
    router.attach(_Pool(global_conns=[], book_conns=[conn]), shards)  # type: ignore[list-item]
    old = ["A", "B", "C"]
    router.add_markets(old)
    await asyncio.sleep(0)
    (sub_id,) = conn.pending
    router.handle(
        conn, orjson.dumps({"type": "subscribed", "id": sub_id, "msg": {"channel": "orderbook_delta", "sid": 1}}), T0
    )
    for i, t in enumerate(old):
        router.handle(conn, _snap(t, i + 1), T0 + 1000)
    router.handle(conn, _delta("A", 4, T0 + 10_000), T0 + 11_000)
    assert not router.sync.awaiting and _windows(gaplog) == []

    # a market the gatherer did not know is subscribed late: an outage window over it alone
    router.add_markets(["D"])
    router.record_late(["D"], T0 + 5_000)
    assert [w.tickers for w in _windows(gaplog)] == [("D",)]
    # before D's snapshot, the sid skips a seq: A, B and C are untrusted from A's last delta (T0 + 10 ms)
    router.handle(conn, _delta("B", 6, T0 + 20_000), T0 + 21_000)
    assert {"A", "B", "C", "D"} <= set(router.sync.awaiting)
    lost_from = T0 + 10_000
    for t in ("A", "B", "C", "D"):
        assert any(t in (w.tickers or ()) and w.from_ts <= lost_from for w in _windows(gaplog)), (t, _windows(gaplog))
    # every market resyncs: no window stays open, and each closed at or after its markets' resync
    for i, t in enumerate(("A", "B", "C", "D")):
        router.handle(conn, _snap(t, 7 + i), T0 + 30_000)
    assert router.open_windows() == 0 and not router.sync.awaiting
    assert all(w.to_ts is not None and w.to_ts >= w.from_ts for w in _windows(gaplog))
    for t in router.background.tasks:
        t.cancel()
