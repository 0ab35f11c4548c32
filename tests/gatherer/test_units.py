"""Unit tests: parser (fuzzed by tests/kalshi/test_parser_fuzz.py), occurrence numbering, sequence, resync windows."""

from __future__ import annotations

import json

import orjson

from kalshictl.gatherer.occurrence import OccurrenceCounter
from kalshictl.gatherer.sequence import BACKWARDS, DUPLICATE, GAP, OK, MarketSync, OpenGap, SeqTracker
from kalshictl.kalshi.messages import (
    ErrorMsg,
    FeeUpdate,
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
    return Parser().parse(json.dumps(obj).encode())


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


def test_lifecycle_time_is_the_messages_own() -> None:
    """No ts/ts_ms: exchange_ts is None (never open_ts/close_ts); settled/determined use their own time."""
    for event_type, extra in (
        ("deactivated", {"is_deactivated": True}),
        ("metadata_updated", {"additional_metadata": {"name": "x"}}),
        ("created", {"open_ts": 1700000000, "close_ts": 4100000000}),
        ("activated", {"open_ts": 1700000000, "close_ts": 4100000000}),
        ("close_date_updated", {"close_ts": 4100000000}),
    ):
        lc = p(
            {"type": "market_lifecycle_v2", "sid": 5, "msg": {"market_ticker": "A", "event_type": event_type, **extra}}
        )
        assert isinstance(lc, Lifecycle) and lc.exchange_ts is None, (event_type, lc)
    det = p(
        {
            "type": "market_lifecycle_v2",
            "msg": {"market_ticker": "A", "event_type": "determined", "determination_ts": 1700000001, "close_ts": 9},
        }
    )
    assert isinstance(det, Lifecycle) and det.exchange_ts == 1700000001000000
    timed = p({"type": "market_lifecycle_v2", "msg": {"market_ticker": "A", "event_type": "created", "ts_ms": 5}})
    assert isinstance(timed, Lifecycle) and timed.exchange_ts == 5000


def test_multivariate_lifecycle_and_fee_update() -> None:
    mve = p(
        {
            "type": "multivariate_market_lifecycle",
            "sid": 9,
            "msg": {"market_ticker": "KXMVE-1", "event_type": "deactivated"},
        }
    )
    assert mve == Lifecycle(
        9,
        "KXMVE-1",
        "deactivated",
        None,
        {"market_ticker": "KXMVE-1", "event_type": "deactivated"},
        "multivariate_market_lifecycle",
    )
    fee = p(
        {
            "type": "event_fee_update",
            "sid": 5,
            "seq": 9,
            "msg": {"event_ticker": "KXBTCD-26MAY2018", "fee_type_override": "quadratic", "fee_multiplier_override": 1},
        }
    )
    assert isinstance(fee, FeeUpdate)
    assert (fee.sid, fee.ticker, fee.exchange_ts, fee.fee_type_override, fee.fee_multiplier_override) == (
        5,
        "KXBTCD-26MAY2018",
        None,
        "quadratic",
        1,
    )
    assert fee.event_type == "event_fee_update" and fee.payload["event_ticker"] == "KXBTCD-26MAY2018"
    cleared = p(
        {
            "type": "event_fee_update",
            "msg": {"event_ticker": "E", "fee_type_override": None, "fee_multiplier_override": None},
        }
    )
    assert isinstance(cleared, FeeUpdate) and cleared.fee_type_override is None
    bad = p({"type": "event_fee_update", "msg": {"event_ticker": "E", "fee_multiplier_override": [1]}})
    assert isinstance(bad, ParseError) and bad.kind == "value"


def test_delta_without_time_is_not_an_error() -> None:
    msg = {"market_ticker": "A", "price_dollars": "0.5", "delta_fp": "2.00", "side": "yes"}
    d = p({"type": "orderbook_delta", "sid": 1, "seq": 2, "msg": msg})
    assert d == OrderbookDelta(1, 2, "A", True, 5000, 200, None)


def test_bounds_on_ids_and_volumes() -> None:
    base = {"market_ticker": "A", "price_dollars": "0.5", "delta_fp": "2.00", "side": "yes", "ts_ms": 1}
    for sid, seq in ((-1, 1), (1, -1), (2**63, 1), (1, 2**63), ("-3", 1)):
        out = p({"type": "orderbook_delta", "sid": sid, "seq": seq, "msg": base})
        assert isinstance(out, ParseError) and out.kind == "value", (sid, seq, out)
    assert isinstance(p({"type": "orderbook_delta", "sid": 2**63 - 1, "seq": 1, "msg": base}), OrderbookDelta)
    for field, value in (("volume_fp", "1" * 25 + ".00"), ("open_interest_fp", 10**30), ("yes_bid_size_fp", "-1.00")):
        out = p({"type": "ticker", "msg": {"market_ticker": "A", "ts_ms": 1, field: value}})
        assert isinstance(out, ParseError) and out.kind == "value", (field, out)
    huge = p(
        {
            "type": "trade",
            "msg": {
                "trade_id": TID,
                "market_ticker": "A",
                "yes_price_dollars": "0.5",
                "count_fp": "9" * 20,
                "taker_side": "yes",
                "ts_ms": 1,
            },
        }
    )
    assert isinstance(huge, ParseError) and huge.kind == "value"


def test_old_ts_without_zone_is_utc() -> None:
    msg = {"market_ticker": "A", "price": 42, "delta": -3, "side": "yes", "ts": "2024-01-01T00:00:00"}
    d = p({"type": "orderbook_delta", "sid": 1, "seq": 9, "msg": msg})
    assert isinstance(d, OrderbookDelta) and d.exchange_ts == 1704067200000000
    msg["ts"] = "2024-01-01T01:00:00+01:00"
    d = p({"type": "orderbook_delta", "sid": 1, "seq": 9, "msg": msg})
    assert isinstance(d, OrderbookDelta) and d.exchange_ts == 1704067200000000


def test_unknown_fields_are_counted_and_the_frame_still_parses() -> None:
    parser = Parser()
    frame = {
        "type": "orderbook_delta",
        "sid": 1,
        "seq": 1,
        "msg": {"market_ticker": "A", "price_dollars": "0.5", "delta_fp": "1.00", "side": "no", "ts_ms": 1, "new": 1},
    }
    assert parser.parse(orjson.dumps(frame)) == OrderbookDelta(1, 1, "A", False, 5000, 100, 1000)
    assert parser.unknown_fields["orderbook_delta.new"] == 1 and parser.slow == 1


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
