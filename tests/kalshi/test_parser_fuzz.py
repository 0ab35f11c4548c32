"""Fuzz the WebSocket parser with realistic frames: valid field names and shapes, one field mutated.

Properties (each can fail):
* the result is a record or a ParseError of a known kind, never ``internal`` (a parser bug);
* the fast path and the reference path give the same answer for every frame (equal records, or errors of one kind);
* an unmutated frame parses to its record with the exact values it was built from;
* every record fits its PostgreSQL column (sid/seq/sizes/times in range, prices in [0, 1] dollar).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kalshictl.kalshi.messages import (
    ERROR_KINDS,
    ID_MAX,
    TS_US_MAX,
    UNKNOWN_FIELDS_MAX,
    Ack,
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
from kalshictl.kalshi.validate import ticker_problem
from tests.helpers import cpu_cost

RECORDS = (OrderbookSnapshot, OrderbookDelta, Trade, TickerUpdate, Lifecycle, FeeUpdate, Subscribed, Ack, ErrorMsg)
BIG = 2**62

tickers = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.", min_size=1, max_size=40)
price_ints = st.integers(0, 10_000)
size_ints = st.integers(0, 10**9)
ts_ms = st.integers(1_600_000_000_000, 1_900_000_000_000)


def price_str(p: int, decimals: int) -> str:
    text = f"{p // 10_000}.{p % 10_000:04d}"
    return text[: len(text) - (4 - decimals)] if p % 10 ** (4 - decimals) == 0 else text


def size_str(s: int) -> str:
    sign = "-" if s < 0 else ""
    return f"{sign}{abs(s) // 100}.{abs(s) % 100:02d}"


@st.composite
def price_strings(draw: Any) -> tuple[int, str]:
    p = draw(price_ints)
    return p, price_str(p, draw(st.sampled_from([4, 4, 4, 3, 2])))


@st.composite
def delta_frames(draw: Any) -> tuple[dict, Any]:
    p, ptxt = draw(price_strings())
    s = draw(st.integers(-(10**9), 10**9).filter(bool))
    side = draw(st.sampled_from(["yes", "no"]))
    ts = draw(ts_ms)
    ticker = draw(tickers)
    sid, seq = draw(st.integers(1, 10**6)), draw(st.integers(1, 10**9))
    msg = {"market_ticker": ticker, "market_id": "9b0f", "price_dollars": ptxt, "delta_fp": size_str(s), "side": side}
    msg["ts"] = "2026-11-22T20:44:01Z"
    msg["ts_ms"] = ts
    expected = OrderbookDelta(sid, seq, ticker, side == "yes", p, s, ts * 1000)
    return {"type": "orderbook_delta", "sid": sid, "seq": seq, "msg": msg}, expected


@st.composite
def trade_frames(draw: Any) -> tuple[dict, Any]:
    p, ptxt = draw(price_strings())
    s = draw(size_ints)
    ts = draw(ts_ms)
    ticker = draw(tickers)
    tid = str(uuid.UUID(int=draw(st.integers(0, 2**128 - 1))))
    taker = draw(st.sampled_from(["yes", "no"]))
    msg = {
        "trade_id": tid,
        "market_ticker": ticker,
        "yes_price_dollars": ptxt,
        "no_price_dollars": price_str(10_000 - p, 4),
        "count_fp": size_str(s),
        "taker_side": taker,
        "taker_outcome_side": taker,
        "is_block_trade": draw(st.booleans()),
        "ts_ms": ts,
    }
    expected = Trade(4, tid, ticker, ts * 1000, p, s, taker == "yes", msg["is_block_trade"])
    return {"type": "trade", "sid": 4, "msg": msg}, expected


@st.composite
def ticker_frames(draw: Any) -> tuple[dict, Any]:
    prices = [draw(price_strings()) for _ in range(3)]
    sizes = [draw(size_ints) for _ in range(5)]
    ts = draw(ts_ms)
    ticker = draw(tickers)
    msg = {
        "market_ticker": ticker,
        "market_id": "x",
        "yes_bid_dollars": prices[0][1],
        "yes_ask_dollars": prices[1][1],
        "price_dollars": prices[2][1],
        "volume_fp": size_str(sizes[0]),
        "open_interest_fp": size_str(sizes[1]),
        "dollar_volume": 410,
        "dollar_open_interest": 123,
        "yes_bid_size_fp": size_str(sizes[2]),
        "yes_ask_size_fp": size_str(sizes[3]),
        "last_trade_size_fp": size_str(sizes[4]),
        "ts_ms": ts,
        "ts": ts // 1000,
    }
    expected = TickerUpdate(
        3, ticker, ts * 1000, prices[0][0], prices[1][0], prices[2][0], *sizes[:2], 410, 123, *sizes[2:]
    )
    return {"type": "ticker", "sid": 3, "msg": msg}, expected


@st.composite
def snapshot_frames(draw: Any) -> tuple[dict, Any]:
    ticker = draw(tickers)
    yes = draw(st.dictionaries(st.integers(1, 9_999), st.integers(1, 10**7), max_size=6))
    no = draw(st.dictionaries(st.integers(1, 9_999), st.integers(1, 10**7), max_size=6))
    msg: dict[str, Any] = {"market_ticker": ticker, "market_id": "m"}
    if yes:
        msg["yes_dollars_fp"] = [[price_str(p, 4), size_str(s)] for p, s in yes.items()]
    if no or not yes:
        msg["no_dollars_fp"] = [[price_str(p, 4), size_str(s)] for p, s in no.items()]
    expected = OrderbookSnapshot(2, 7, ticker, sorted(yes.items()), sorted(no.items()))
    return {"type": "orderbook_snapshot", "sid": 2, "seq": 7, "msg": msg}, expected


@st.composite
def lifecycle_frames(draw: Any) -> tuple[dict, Any]:
    ticker = draw(tickers)
    event_type = draw(st.sampled_from(["created", "activated", "deactivated", "metadata_updated", "settled"]))
    msg: dict[str, Any] = {"market_ticker": ticker, "event_type": event_type}
    own = None
    if event_type in ("created", "activated"):
        msg["open_ts"], msg["close_ts"] = 1_790_000_000, 1_990_000_000
    if event_type == "settled":
        msg["settled_ts"] = 1_790_000_123
        msg["result"] = "yes"
        own = 1_790_000_123_000_000
    mtype = draw(st.sampled_from(["market_lifecycle_v2", "multivariate_market_lifecycle"]))
    expected = Lifecycle(5, ticker, event_type, own, dict(msg), mtype)
    return {"type": mtype, "sid": 5, "msg": msg}, expected


@st.composite
def fee_frames(draw: Any) -> tuple[dict, Any]:
    ticker = draw(tickers)
    cleared = draw(st.booleans())
    msg = {
        "event_ticker": ticker,
        "fee_type_override": None if cleared else "quadratic",
        "fee_multiplier_override": None if cleared else 1,
    }
    expected = FeeUpdate(5, ticker, None, msg["fee_type_override"], msg["fee_multiplier_override"], dict(msg))
    return {"type": "event_fee_update", "sid": 5, "msg": msg}, expected


valid_frames = st.one_of(
    delta_frames(), trade_frames(), ticker_frames(), snapshot_frames(), lifecycle_frames(), fee_frames()
)

# Replacement values: wrong types, out of range, too long, NUL, non-ASCII digits, malformed numbers and times.
SPECIAL: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    1.5,
    1e300,
    2**63,
    2**70,
    -(2**63),
    "",
    "yes",
    "no",
    "bid",
    "0.41005",
    "1.0001",
    "-0.01",
    "0",
    "-0.00",
    "0.00",
    "1e400",
    "1e-400",
    # exponent and precision extremes: refused before any arithmetic (tests/test_units.py)
    "9e99999",
    "9e999999",
    "-9e999999",
    "1e10000000",
    "1e-999999999",
    "0e-999999999",
    "4100e-4",
    "1E+2",
    "0.560000",
    "0.5600001",
    "0." + "0" * 300 + "1",
    "1" + "0" * 40,
    "EVIL,X Y\n\u202e",
    "A B",
    "A,B",
    "\u202eA",
    "NaN",
    "inf",
    "\u00b2",
    "\u0661\u0662",
    "\u0661.\u0660\u0660",
    "--5",
    "-",
    "12.5.1",
    "1_0.00",
    " 1.00",
    "0x10",
    "9" * 30,
    "9" * 5000,
    "1." + "0" * 60,
    "A\x00B",
    "X" * 200,
    "2024-01-01T00:00:00",
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-14:00",
    "not-a-time",
    "5AFB8367-8C52-4C23-A7DD-48CFBAA65D5A",
    "5afb83678c524c23a7dd48cfbaa65d5a",
    [],
    [1, 2],
    [["0.5", "1.00"], ["0.5", "-1.00"]],
    [["0.5"]],
    {"a": 1},
]
bad_values = st.one_of(
    st.sampled_from(SPECIAL),
    st.sampled_from(SPECIAL),
    st.sampled_from(SPECIAL),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.lists(st.lists(st.text(max_size=6), max_size=3), max_size=3),
)


def _deep(n: int) -> Any:
    v: Any = 1
    for _ in range(n):
        v = [v]
    return v


@st.composite
def mutated_frames(draw: Any) -> dict:
    frame, _ = draw(valid_frames)
    frame = json.loads(json.dumps(frame))
    where = draw(st.sampled_from(["msg", "msg", "msg", "frame"]))
    target = frame["msg"] if where == "msg" else frame
    keys = sorted(target)
    action = draw(st.sampled_from(["replace", "replace", "replace", "delete", "add", "deep"]))
    key = draw(st.sampled_from(keys))
    if action == "replace":
        target[key] = draw(bad_values)
    elif action == "delete":
        del target[key]
    elif action == "add":
        target[draw(st.text(max_size=10))] = draw(bad_values)
    else:
        target[key] = _deep(draw(st.integers(200, 400)))
    return frame


def check_record(rec: Any) -> None:
    assert isinstance(rec, (*RECORDS, ParseError)), rec
    if isinstance(rec, ParseError):
        assert rec.kind in ERROR_KINDS, rec
        return
    for name in ("sid", "seq", "id"):
        v = getattr(rec, name, None)
        assert v is None or 0 <= v < ID_MAX, (name, rec)
    ts = getattr(rec, "exchange_ts", None)
    assert ts is None or 0 <= ts < TS_US_MAX, rec
    if isinstance(rec, OrderbookDelta):
        assert 0 <= rec.price <= 10_000 and rec.size_delta != 0 and -BIG < rec.size_delta < BIG
        assert isinstance(rec.side, bool)
    if isinstance(rec, Trade):
        assert 0 <= rec.price <= 10_000 and 0 <= rec.size < BIG
    if isinstance(rec, TickerUpdate):
        for v in (rec.yes_bid, rec.yes_ask, rec.last_price):
            assert v is None or 0 <= v <= 10_000
        for v in (rec.volume, rec.open_interest, rec.dollar_volume, rec.yes_bid_size, rec.last_trade_size):
            assert v is None or -BIG < v < BIG
    if isinstance(rec, OrderbookSnapshot):
        for p, s in rec.yes + rec.no:
            assert 0 <= p <= 10_000 and 0 <= s < BIG
    for name in ("ticker", "trade_id"):
        v = getattr(rec, name, None)
        if v is not None:
            assert 0 < len(v) <= 128 and "\x00" not in v
    if isinstance(rec, Lifecycle | FeeUpdate):
        assert b"\\u0000" not in orjson.dumps(rec.payload)


def same_answer(raw: bytes) -> Any:
    """The fast path and the reference path agree (with and without ``use_yes_price``); returns the record."""
    out = None
    for use_yes_price in (False, True):
        fast = Parser(use_yes_price=use_yes_price).parse(raw)
        ref = Parser(use_yes_price=use_yes_price).parse_reference(raw)
        if isinstance(ref, ParseError):
            assert isinstance(fast, ParseError) and fast.kind == ref.kind, (fast, ref)
        else:
            assert fast == ref, (fast, ref)
        check_record(fast)
        out = out or fast
    return out


BASES = [
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
    },
    {
        "type": "orderbook_delta",
        "sid": 2,
        "seq": 4,
        "msg": {"market_ticker": "A", "price": 42, "delta": -3, "side": "yes", "ts": "2024-01-01T00:00:00Z"},
    },
    {
        "type": "trade",
        "sid": 4,
        "msg": {
            "trade_id": "5afb8367-8c52-4c23-a7dd-48cfbaa65d5a",
            "market_ticker": "A",
            "yes_price_dollars": "0.4100",
            "no_price_dollars": "0.5900",
            "count_fp": "12.00",
            "taker_side": "yes",
            "taker_book_side": "bid",
            "is_block_trade": False,
            "ts_ms": 1795795829474,
        },
    },
    {
        "type": "ticker",
        "sid": 3,
        "msg": {
            "market_ticker": "A",
            "price_dollars": "0.4100",
            "yes_bid_dollars": "0.4000",
            "yes_ask_dollars": "0.4200",
            "volume_fp": "1000.00",
            "open_interest_fp": "300.00",
            "dollar_volume": 410,
            "dollar_open_interest": 123,
            "yes_bid_size_fp": "5.00",
            "yes_ask_size_fp": "6.00",
            "last_trade_size_fp": "1.00",
            "ts_ms": 1795795829474,
            "ts": 1795795829,
        },
    },
    {
        "type": "orderbook_snapshot",
        "sid": 2,
        "seq": 2,
        "msg": {"market_ticker": "FED", "yes_dollars_fp": [["0.2200", "333.00"]], "no_dollars_fp": [["0.5", "1"]]},
    },
    {
        "type": "market_lifecycle_v2",
        "sid": 5,
        "msg": {"market_ticker": "A", "event_type": "settled", "settled_ts": 1700000000, "result": "yes"},
    },
    {
        "type": "event_fee_update",
        "sid": 5,
        "msg": {"event_ticker": "E", "fee_type_override": "quadratic", "fee_multiplier_override": 1},
    },
    {"type": "subscribed", "id": 1, "msg": {"channel": "ticker", "sid": 7}},
    {"type": "ok", "id": 2, "sid": 7, "seq": 9, "msg": {"market_tickers": ["A"]}},
    {"id": 3, "type": "error", "msg": {"code": 16, "msg": "Market not found", "market_ticker": "Z"}},
]


def test_every_field_with_every_bad_value() -> None:
    """Exhaustive: each field of each base frame replaced by each special value, or deleted."""
    internal = 0
    checked = 0
    for base in BASES:
        same_answer(orjson.dumps(base))
        for where in ("frame", "msg"):
            target_keys = sorted(base if where == "frame" else base["msg"])
            for key in target_keys:
                for value in [*SPECIAL, "<delete>"]:
                    frame = json.loads(json.dumps(base))
                    target = frame if where == "frame" else frame["msg"]
                    if value == "<delete>":
                        del target[key]
                    else:
                        target[key] = value
                    out = same_answer(json.dumps(frame).encode())
                    internal += isinstance(out, ParseError) and out.kind == "internal"
                    checked += 1
    assert checked > 2000 and internal == 0


@settings(max_examples=300, deadline=None)
@given(valid_frames)
def test_valid_frames_parse_exactly(case: tuple[dict, Any]) -> None:
    frame, expected = case
    parser = Parser()
    raw = orjson.dumps(frame)
    assert parser.parse(raw) == expected
    assert parser.parse_reference(raw) == expected
    assert not parser.errors and not parser.unknown_fields
    if frame["type"] in ("orderbook_delta", "trade", "ticker", "orderbook_snapshot"):
        assert parser.slow == 1  # only the explicit reference call: the fast path took the frame


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_frames())
def test_mutated_frames_fast_equals_reference_and_never_internal(frame: dict) -> None:
    same_answer(json.dumps(frame).encode())


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_bytes_are_json_errors(raw: bytes) -> None:
    out = same_answer(raw)
    assert isinstance(out, (*RECORDS, ParseError))


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
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
        "multivariate_market_lifecycle",
        "event_lifecycle",
        "event_fee_update",
        "subscribed",
        "ok",
        "unsubscribed",
        "error",
        "zzz",
    ]
)


@settings(max_examples=600, deadline=None)
@given(_types, st.one_of(st.none(), st.integers(), st.text(max_size=4)), _json)
def test_fuzz_shapes_give_a_known_kind(mtype: str, sid: object, msg: object) -> None:
    out = same_answer(json.dumps({"type": mtype, "sid": sid, "seq": sid, "msg": msg}).encode())
    if isinstance(out, ParseError):
        assert out.kind in ERROR_KINDS
    else:
        assert isinstance(out, RECORDS)


# ----- hostile input: bounded in time, in memory, and one ticker rule -------------------------------------------
HOSTILE_NUMBERS = [
    "9e99999",
    "9e999999",
    "-9e999999",
    "1e10000000",
    "1e-999999999",
    "0e-999999999",
    "4100e-4",
    "1E+2",
    "0.5600001",
    "0." + "0" * 300 + "1",
    "1" * 5000,
    "1" + "0" * 40,
    2**64,
    1e300,
]
# (base frame index, path to the numeric value): the hot shapes (fast path) and the legacy ones (reference path)
NUMERIC_FIELDS = [
    (0, ("msg", "price_dollars")),
    (0, ("msg", "delta_fp")),
    (1, ("msg", "price")),
    (1, ("msg", "delta")),
    (2, ("msg", "yes_price_dollars")),
    (2, ("msg", "count_fp")),
    (3, ("msg", "yes_bid_dollars")),
    (3, ("msg", "volume_fp")),
    (3, ("msg", "last_trade_size_fp")),
    (4, ("msg", "yes_dollars_fp", 0, 0)),
    (4, ("msg", "yes_dollars_fp", 0, 1)),
    (4, ("msg", "no_dollars_fp", 0, 0)),
]


def _with(base: dict, path: tuple, value: Any) -> bytes:
    frame = json.loads(json.dumps(base))
    target = frame
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return orjson.dumps(frame)


def _encode(base: dict, path: tuple, value: Any) -> bytes:
    if isinstance(value, int) and abs(value) >= 2**63:  # orjson refuses big ints: splice the digits in
        return _with(base, path, "@BIG@").replace(b'"@BIG@"', str(value).encode())
    return _with(base, path, value)


def test_hostile_numbers_are_refused_within_10ms_on_both_paths() -> None:
    """Each hostile number in each numeric field: a ``value`` error (never a record, never ``internal``, never an
    exception), in under 10 ms on the fast path and on the reference path."""
    parser = Parser()
    slow = []
    for i, path in NUMERIC_FIELDS:
        for value in HOSTILE_NUMBERS:
            raw = _encode(BASES[i], path, value)
            for parse in (parser.parse, parser.parse_reference):
                out, took = cpu_cost(parse, raw)
                assert isinstance(out, ParseError) and out.kind == "value", (path, str(value)[:30], out)
                if took >= 0.010:
                    slow.append((path, str(value)[:30], parse.__name__, round(took * 1000, 1)))
    assert not slow, slow
    assert parser.errors["internal"] == 0 and parser.errors["value"] == 3 * 2 * len(NUMERIC_FIELDS) * len(
        HOSTILE_NUMBERS
    )


def test_unknown_fields_are_bounded() -> None:
    """A stream of frames, each with a new field name, keeps a bounded table (every field still counted)."""
    parser = Parser()
    n = 3 * UNKNOWN_FIELDS_MAX
    for k in range(n):
        frame = dict(BASES[3], msg={**BASES[3]["msg"], f"field_{k}_" + "x" * 50: 1})
        assert isinstance(parser.parse(orjson.dumps(frame)), TickerUpdate)
    assert parser.unknown_total == n
    assert len(parser.unknown_fields) <= UNKNOWN_FIELDS_MAX + 1
    assert sum(parser.unknown_fields.values()) == n


TICKER_FRAMES = [  # (base frame index, ticker key)
    (0, "market_ticker"),
    (1, "market_ticker"),
    (2, "market_ticker"),
    (3, "market_ticker"),
    (4, "market_ticker"),
    (5, "market_ticker"),
    (6, "event_ticker"),
]


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=12), st.text("AB-., \t\n\u202e\u00a0\x00", max_size=6), st.just("Y" * 129)))
def test_the_websocket_ticker_rule_is_the_rest_rule(ticker: str) -> None:
    for i, key in TICKER_FRAMES:
        out = same_answer(_with(BASES[i], ("msg", key), ticker))
        if ticker_problem(ticker) is None:
            assert not isinstance(out, ParseError), (ticker, out)
        else:
            assert isinstance(out, ParseError) and out.kind in ("shape", "value"), (ticker, out)


def test_a_hostile_ticker_is_refused() -> None:
    for i, key in TICKER_FRAMES:
        out = same_answer(_with(BASES[i], ("msg", key), "EVIL,X Y\n\u202e"))
        assert isinstance(out, ParseError) and out.kind == "value", out
