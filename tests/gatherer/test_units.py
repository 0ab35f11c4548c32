"""Unit tests: parser (fuzzed with hypothesis), occurrence numbering, sequence tracking, resync windows."""

from __future__ import annotations

import json

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from kalshictl.gatherer.occurrence import OccurrenceCounter
from kalshictl.gatherer.sequence import BACKWARDS, DUPLICATE, GAP, OK, MarketSync, OpenGap, SeqTracker
from kalshictl.kalshi.messages import (
    ErrorMsg,
    Lifecycle,
    OrderbookDelta,
    OrderbookSnapshot,
    ParseError,
    Parser,
    Subscribed,
    TickerUpdate,
    Trade,
)

TID = "5afb8367-8c52-4c23-a7dd-48cfbaa65d5a"


def p(obj: object) -> object:
    return Parser().parse(orjson.dumps(obj))


def test_current_delta_and_snapshot_shapes() -> None:
    d = p(
        {
            "type": "orderbook_delta",
            "sid": 2,
            "seq": 3,
            "msg": {
                "market_ticker": "FED",
                "market_id": "x",
                "price_dollars": "0.960",
                "delta_fp": "-54.50",
                "side": "no",
                "ts": "2022-11-22T20:44:01Z",
                "ts_ms": 1669149841123,
            },
        }
    )
    assert d == OrderbookDelta(2, 3, "FED", False, 9600, -5450, 1669149841123000)
    s = p(
        {
            "type": "orderbook_snapshot",
            "sid": 2,
            "seq": 2,
            "msg": {"market_ticker": "FED", "yes_dollars_fp": [["0.2200", "333.00"], ["0.0800", "300.00"]]},
        }
    )
    assert s == OrderbookSnapshot(2, 2, "FED", [(800, 30000), (2200, 33300)], [])


def test_legacy_cent_shapes_and_numbers() -> None:
    d = p(
        {
            "type": "orderbook_delta",
            "sid": 1,
            "seq": 9,
            "msg": {"market_ticker": "A", "price": 42, "delta": -3, "side": "yes", "ts": "2024-01-01T00:00:00Z"},
        }
    )
    assert d == OrderbookDelta(1, 9, "A", True, 4200, -300, 1704067200000000)
    s = p(
        {"type": "orderbook_snapshot", "sid": 1, "seq": 1, "msg": {"market_ticker": "A", "yes": [[42, 13]], "no": None}}
    )
    assert s == OrderbookSnapshot(1, 1, "A", [(4200, 1300)], [])
    t = p(
        {
            "type": "trade",
            "sid": 3,
            "msg": {
                "trade_id": TID,
                "market_ticker": "A",
                "yes_price": 41,
                "count": 7,
                "taker_side": "no",
                "ts": 1700000000,
            },
        }
    )
    assert t == Trade(3, TID, "A", 1700000000000000, 4100, 700, False, False)
    u = p(
        {
            "type": "ticker",
            "sid": 4,
            "msg": {
                "market_ticker": "A",
                "price": 41,
                "yes_bid": 40,
                "yes_ask": 42,
                "volume": 10,
                "open_interest": 5,
                "dollar_volume": 3,
                "ts": 1700000000,
            },
        }
    )
    assert isinstance(u, TickerUpdate) and (u.yes_bid, u.yes_ask, u.last_price, u.volume) == (4000, 4200, 4100, 1000)
    n = p(
        {
            "type": "ticker",
            "sid": 4,
            "msg": {"market_ticker": "A", "price_dollars": 0.41, "volume_fp": 10.5, "ts_ms": "1700000000000"},
        }
    )
    assert isinstance(n, TickerUpdate) and n.last_price == 4100 and n.volume == 1050


def test_lifecycle_time_fallback_and_control_frames() -> None:
    lc = p(
        {
            "type": "market_lifecycle_v2",
            "sid": 5,
            "msg": {"market_ticker": "A", "event_type": "settled", "settled_ts": 1700000000},
        }
    )
    assert isinstance(lc, Lifecycle) and lc.exchange_ts == 1700000000000000
    assert p({"type": "subscribed", "id": 1, "msg": {"channel": "ticker", "sid": 7}}) == Subscribed(1, "ticker", 7)
    e = p({"id": 3, "type": "error", "msg": {"code": 16, "msg": "Market not found", "market_ticker": "Z"}})
    assert e == ErrorMsg(3, 16, "Market not found", "Z")


def test_bad_input_is_a_typed_error() -> None:
    parser = Parser()
    assert parser.parse(b"not json").kind == "json"  # type: ignore[union-attr]
    assert parser.parse(b'{"type":"nope"}').kind == "type"  # type: ignore[union-attr]
    bad_price = {
        "type": "orderbook_delta",
        "sid": 1,
        "seq": 1,
        "msg": {"market_ticker": "A", "price_dollars": "1.0001", "delta_fp": "1", "side": "yes", "ts_ms": 1},
    }
    assert parser.parse(orjson.dumps(bad_price)).kind == "value"  # type: ignore[union-attr]
    bad_tid = {
        "type": "trade",
        "msg": {
            "trade_id": "x",
            "market_ticker": "A",
            "yes_price_dollars": "0.5",
            "count_fp": "1",
            "taker_side": "yes",
            "ts_ms": 1,
        },
    }
    assert parser.parse(orjson.dumps(bad_tid)).kind == "value"  # type: ignore[union-attr]
    unknown = {"type": "ticker", "msg": {"market_ticker": "A", "ts_ms": 1, "brand_new": 1}}
    assert isinstance(parser.parse(orjson.dumps(unknown)), TickerUpdate)
    assert parser.unknown_fields["ticker.brand_new"] == 1
    assert sum(parser.errors.values()) == 4


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=6),
    max_leaves=20,
)
_types = st.sampled_from(
    [
        "orderbook_delta",
        "orderbook_snapshot",
        "trade",
        "ticker",
        "market_lifecycle_v2",
        "event_lifecycle",
        "subscribed",
        "ok",
        "unsubscribed",
        "error",
        "zzz",
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_bytes_never_raise(raw: bytes) -> None:
    Parser().parse(raw)


@settings(max_examples=600, deadline=None)
@given(_types, st.one_of(st.none(), st.integers(), st.text(max_size=4)), _json)
def test_fuzz_shapes_never_raise(mtype: str, sid: object, msg: object) -> None:
    out = Parser().parse(json.dumps({"type": mtype, "sid": sid, "seq": sid, "msg": msg}))
    assert out is not None
    if isinstance(out, OrderbookDelta):
        assert 0 <= out.price <= 10_000 and out.size_delta != 0
    assert not isinstance(out, Exception) or isinstance(out, ParseError)


def test_occurrence_numbering() -> None:
    occ = OccurrenceCounter()
    assert [occ.next("A", 1, True, 50, 100) for _ in range(3)] == [0, 1, 2]
    assert occ.next("A", 1, True, 50, -100) == 0  # different size change
    assert occ.next("B", 1, True, 50, 100) == 0  # different market
    assert occ.next("A", 2, True, 50, 100) == 0  # next millisecond resets
    assert occ.next("A", 2, False, 50, 100) == 0


def test_seq_tracker() -> None:
    t = SeqTracker(1)
    assert [t.check(s) for s in (1, 2, 2, 3, 5, 6, 4, 5)] == [OK, OK, DUPLICATE, OK, GAP, OK, BACKWARDS, OK]
    assert t.check(None) == OK


def test_market_sync_windows() -> None:
    sync = MarketSync()
    assert sync.accept_delta("A", 10)
    gap = OpenGap("seq_gap", 1, "A", 10, 11)
    assert sync.invalidate("A", gap) and not sync.invalidate("A", OpenGap("seq_gap", 1, "A", 12, 12))
    assert not sync.accept_delta("A", 20)  # awaiting the snapshot: never mix pre-snapshot deltas in
    assert sync.on_snapshot("A", 30) is gap
    assert not sync.accept_delta("A", 30)  # same cut millisecond: occurrence could be ambiguous
    assert sync.accept_delta("A", 31) and sync.accept_delta("A", 25)  # cut cleared once past it
    assert sync.on_snapshot("A", 40) is None  # an ordinary snapshot closes nothing
