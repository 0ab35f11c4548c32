"""The router's per-frame path on a real Router and real writers (not started: rows stay buffered): message counts
reach the Prometheus exposition unchanged, and the in-sequence fast path keeps every sequence verdict exact."""

from __future__ import annotations

import orjson
from prometheus_client import generate_latest

from kalshictl.config import WebSocketSettings
from kalshictl.gatherer.connections import ConnectionPool
from kalshictl.gatherer.metrics import GathererMetrics
from kalshictl.gatherer.router import Router
from kalshictl.gatherer.writers import ALL_TABLES, BatchWriter, WriterSet


async def _no_db() -> None:
    raise RuntimeError("no database in this test")


def router() -> tuple[Router, object, GathererMetrics]:
    writers = WriterSet({s.name: BatchWriter(s, _no_db) for s in ALL_TABLES})  # type: ignore[arg-type]
    metrics = GathererMetrics("t")
    r = Router("t", writers, metrics)
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


def test_message_counts_are_published_at_scrape_time() -> None:
    r, conn, metrics = router()
    trade = {
        "type": "trade",
        "sid": 3,
        "msg": {
            "trade_id": "4f9a1c2e-0b7d-4e51-9a3f-2c8d6e1b7a90",
            "market_ticker": "A",
            "yes_price_dollars": "0.5",
            "count_fp": "1",
            "taker_side": "yes",
            "ts_ms": 1,
        },
    }
    for i in range(1, 4):
        r.handle(conn, delta(i), 1)
    r.handle(conn, orjson.dumps(trade), 1)
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
    assert r.parse_errors == 1


def test_unknown_fields_reach_the_metric() -> None:
    r, conn, metrics = router()
    frame = orjson.loads(delta(1))
    frame["msg"]["brand_new"] = 1
    r.handle(conn, orjson.dumps(frame), 1)
    r.handle(conn, orjson.dumps(frame), 1)  # a duplicate seq, but parsed (and counted) all the same
    assert r.parser.unknown_total == sum(r.parser.unknown_fields.values()) == 2
    assert "kalshi_gatherer_unknown_fields_total 2.0" in generate_latest(metrics.registry).decode()
