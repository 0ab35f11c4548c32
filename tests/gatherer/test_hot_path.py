"""The router's per-frame path on a real Router and real writers (not started: rows stay buffered): message counts
reach the Prometheus exposition unchanged, and the in-sequence fast path keeps every sequence verdict exact."""

from __future__ import annotations

import dataclasses

import orjson
from prometheus_client import generate_latest

from kalshictl.config import WebSocketSettings
from kalshictl.gatherer.connections import ConnectionPool
from kalshictl.gatherer.gaps import GapLog
from kalshictl.gatherer.metrics import GathererMetrics
from kalshictl.gatherer.router import Router
from kalshictl.gatherer.writers import BatchWriter, WriterSet
from kalshictl.schema import EVENT_TABLES, DeltaRow, LifecycleRow, SnapshotRow, TradeRow


async def _no_db() -> None:
    raise RuntimeError("no database in this test")


def router() -> tuple[Router, object, GathererMetrics]:
    writers = WriterSet({s.name: BatchWriter(s, _no_db) for s in EVENT_TABLES})  # type: ignore[arg-type]
    metrics = GathererMetrics("t")
    r = Router("t", writers, metrics, GapLog("t", _no_db, metrics=metrics))  # windows kept in memory only
    pool = ConnectionPool(
        WebSocketSettings(), "ws://unused", metrics, on_open=r.on_open, on_frame=r.handle, on_close=r.on_close
    )
    return r, pool.book_conns[0], metrics


def delta(seq: int | None, ts_ms: int = 1, price: str = "0.50", size: str = "1.00", sid: int = 2) -> bytes:
    frame: dict = {
        "type": "orderbook_delta",
        "sid": sid,
        "msg": {"market_ticker": "A", "price_dollars": price, "delta_fp": size, "side": "yes", "ts_ms": ts_ms},
    }
    if seq is not None:
        frame["seq"] = seq
    return orjson.dumps(frame)


def trade(count: str = "1", taker_side: str = "yes", ts_ms: int = 1) -> bytes:
    return orjson.dumps(
        {
            "type": "trade",
            "sid": 3,
            "msg": {
                "trade_id": "4f9a1c2e-0b7d-4e51-9a3f-2c8d6e1b7a90",
                "market_ticker": "A",
                "yes_price_dollars": "0.5",
                "count_fp": count,
                "taker_side": taker_side,
                "ts_ms": ts_ms,
            },
        }
    )


def test_message_counts_are_published_at_scrape_time() -> None:
    r, conn, metrics = router()
    for i in range(1, 4):
        r.handle(conn, delta(i), 1)
    r.handle(conn, trade(), 1)
    r.handle(conn, b"{not json", 1)
    text = generate_latest(metrics.registry).decode()
    assert 'kalshi_gatherer_messages_total{type="orderbook_delta"} 3.0' in text
    assert 'kalshi_gatherer_messages_total{type="trade"} 1.0' in text
    assert 'kalshi_gatherer_messages_created{type="trade"}' in text
    assert 'type="ticker"' not in text  # a type appears once it is counted, as with a labelled Counter
    samples = {
        s.labels["type"]: s.value for m in metrics.messages.collect() for s in m.samples if s.name.endswith("_total")
    }
    assert samples == {"orderbook_delta": 3, "trade": 1}
    assert r.stats.parse_errors == 1


def test_unknown_fields_reach_the_metric() -> None:
    r, conn, metrics = router()
    frame = orjson.loads(delta(1))
    frame["msg"]["brand_new"] = 1
    r.handle(conn, orjson.dumps(frame), 1)
    r.handle(conn, orjson.dumps(frame), 1)  # a duplicate seq, but parsed (and counted) all the same
    assert r.parser.unknown_total == sum(r.parser.unknown_fields.values()) == 2
    assert "kalshi_gatherer_unknown_fields_total 2.0" in generate_latest(metrics.registry).decode()


def _seq_state(r: Router, conn: object, sid: int = 2) -> dict:
    """What a sequence verdict may change: the connection's and the sid's state, and the router's counters (the
    exchange times BookFrames.delta sets after the verdict excluded)."""
    st = r.states[conn]
    ss = st.sids[sid]
    conn_state = {k: v for k, v in vars(st).items() if k not in ("last_exchange_ts", "sids")}
    conn_state["sids"] = sorted(st.sids)
    sid_state = {k: getattr(ss, k) for k in ss.__slots__ if k not in ("last_ts", "verified", "tracker", "subs")}
    stats = dataclasses.asdict(r.stats)
    counters = {k: v for k, v in stats.items() if isinstance(v, int) and k != "last_exchange_ts"}
    return {"conn": conn_state, "sid": sid_state, "last": ss.tracker.last, "counters": counters}


def test_in_sequence_fast_path_matches_the_general_verdict() -> None:
    """BookFrames.delta takes the next seq inline; the state it leaves is what SeqTracker.check +
    GapDetector.frame leave."""
    fast, conn_a, _ = router()
    general, conn_b, _ = router()
    for r, c in ((fast, conn_a), (general, conn_b)):
        r.handle(c, delta(1, ts_ms=1), 10)  # the sid's first frame: general path on both
    fast.handle(conn_a, delta(2, ts_ms=2), 20)
    ss = general.states[conn_b].sids[2]
    prev = ss.tracker.last
    assert general.detector.frame(conn_b, ss, ss.tracker.check(2), prev, 2, 20) is True
    assert _seq_state(fast, conn_a) == _seq_state(general, conn_b)


def test_sequence_verdicts_stay_exact() -> None:
    r, conn, _ = router()
    for seq, ts in ((1, 1), (2, 2), (2, 2), (3, 3), (6, 4), (5, 5), (6, 6), (None, 7)):
        r.handle(conn, delta(seq, ts_ms=ts, size=f"{ts}.00"), ts * 1000)
    # 2 repeated: dropped as a duplicate; 6 after 3: a gap (stored, re-based); 5 after 6: backwards (stored);
    # 6 after 5: in sequence again; no seq: accepted without a verdict
    assert r.stats.duplicates == 1
    rows = r.writers["orderbook_deltas"]._buf
    assert [row[7] for row in rows] == [1, 2, 3, 6, 5, 6, None]
    assert r.states[conn].sids[2].tracker.last == 6
    assert [row[6] for row in rows] == [0] * 7  # occurrence numbers: every delta distinct


def test_resyncing_market_drops_its_deltas_until_the_cut() -> None:
    r, conn, _ = router()
    r.handle(conn, delta(1, ts_ms=1), 1000)
    r.sync.invalidate("A", 1000)
    r.handle(conn, delta(2, ts_ms=2), 2000)  # awaiting a snapshot: dropped
    r.sync.on_snapshot("A", 3000)  # cut at 3 ms
    r.handle(conn, delta(3, ts_ms=3), 3000)  # at the cut: dropped
    r.handle(conn, delta(4, ts_ms=4), 4000)  # after it: stored, and the cut is gone
    assert r.stats.dropped_resync == 2
    assert [row[7] for row in r.writers["orderbook_deltas"]._buf] == [1, 4]
    assert "A" not in r.sync.cutoff


def test_every_router_row_reads_as_its_tables_named_tuple() -> None:
    """The router's rows are in the catalogue's field order (kalshictl/schema.py): a delta (a plain tuple on the hot
    path) read as a DeltaRow, trade and lifecycle rows are TradeRow / LifecycleRow, a WebSocket snapshot a SnapshotRow
    whose exchange_ts is its anchor."""
    r, conn, _ = router()
    r.handle(conn, delta(1, ts_ms=5, price="0.42", size="3.00"), 5_000_100)
    d = DeltaRow(*r.writers["orderbook_deltas"]._buf[0])
    assert (d.exchange_ts, d.received_at, d.ticker, d.side, d.price, d.size_delta, d.seq, d.sid) == (
        5_000,
        5_000_100,
        "A",
        True,
        4_200,
        300,
        1,
        2,
    )
    r.handle(conn, trade(count="2", taker_side="no", ts_ms=7), 7_000_200)
    t = r.writers["trades"]._buf[0]
    assert isinstance(t, TradeRow)
    assert (t.exchange_ts, t.received_at, t.ticker, t.size, t.taker_side, t.source, t.sid) == (
        7_000,
        7_000_200,
        "A",
        200,
        False,
        "ws",
        3,
    )
    life = {"type": "market_lifecycle_v2", "sid": 4, "msg": {"market_ticker": "A", "event_type": "deactivated"}}
    r.handle(conn, orjson.dumps(life), 8_000_000)
    lrow = r.writers["lifecycle_events"]._buf[0]
    assert isinstance(lrow, LifecycleRow)
    assert (lrow.ticker, lrow.event_type, lrow.received_at, lrow.sid) == ("A", "deactivated", 8_000_000, 4)
    snap = {
        "type": "orderbook_snapshot",
        "sid": 2,
        "seq": 2,
        "msg": {"market_ticker": "A", "yes_dollars_fp": [["0.40", "5.00"]], "no_dollars_fp": [["0.55", "1.00"]]},
    }
    r.handle(conn, orjson.dumps(snap), 9_000_000)
    r.handle(conn, delta(3, ts_ms=10), 10_000_100)  # the market's next delta anchors the waiting snapshot
    s = r.writers["orderbook_snapshots"]._buf[0]
    assert isinstance(s, SnapshotRow)
    assert (s.snapshot_ts, s.exchange_ts, s.ticker, s.source, s.best_yes_bid, s.sid, s.seq) == (
        9_000_000,
        10_000 - 1,
        "A",
        "ws",
        4_000,
        2,
        2,
    )
