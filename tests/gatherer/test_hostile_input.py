"""Hostile input on the gatherer's paths: a frame through the router, an order book through the REST poller, a trade
through the backfill, a market through a re-anchor listing. Each bad item is refused in under 10 ms, counted, and
costs nothing but itself (docs/security.md, "Bad input and what it gets")."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import orjson
import psycopg
import pytest

from kalshictl.config import SnapshotPollerSettings
from kalshictl.gatherer.backfill import TradeBackfill, created_us, ticker_snapshot_row, trade_row
from kalshictl.gatherer.gaps import Window
from kalshictl.gatherer.poller import SnapshotPoller, book_of, parse_rest_book
from kalshictl.gatherer.writers import BatchWriter
from kalshictl.kalshi.rest import KalshiRest
from kalshictl.schema import SNAPSHOTS, TICKERS, TRADES
from tests.gatherer.test_hot_path import router
from tests.helpers import cpu_cost
from tests.hostile_api import hostile_api

HOSTILE_NUMBERS = ["9e99999", "9e999999", "1e10000000", "1e-999999999", "0." + "0" * 300 + "1", "1" * 5000, 2**64]
LIMIT_S = 0.010


def _raw(frame: dict) -> bytes:
    return orjson.dumps(frame).replace(b'"@BIG@"', str(2**64).encode())


def _load(obj: Any) -> Any:
    """``obj`` as a JSON decoder gives it back (Python's json keeps ints past 64 bits, which orjson refuses)."""
    return json.loads(_raw(obj))


def _served(obj: Any) -> Any:
    """``obj`` as the hostile API can serve it: an int past 64 bits becomes the string "1e99"."""
    return orjson.loads(_raw(obj).replace(str(2**64).encode(), b'"1e99"'))


def _big(v: Any) -> Any:
    return "@BIG@" if isinstance(v, int) else v  # orjson refuses ints past 64 bits: spliced in as text by _raw


def test_router_refuses_each_hostile_frame_within_10ms() -> None:
    r, conn, _metrics = router()
    sent = 0
    for v in HOSTILE_NUMBERS:
        frames = [
            {
                "type": "orderbook_delta",
                "sid": 2,
                "seq": 1,
                "msg": {"market_ticker": "A", "price_dollars": _big(v), "delta_fp": "1.00", "side": "yes", "ts_ms": 1},
            },
            {
                "type": "orderbook_delta",
                "sid": 2,
                "seq": 1,
                "msg": {"market_ticker": "A", "price": _big(v), "delta": 1, "side": "yes", "ts_ms": 1},
            },
            {
                "type": "orderbook_snapshot",
                "sid": 2,
                "seq": 1,
                "msg": {"market_ticker": "A", "yes_dollars_fp": [["0.5000", _big(v)]]},
            },
        ]
        for frame in frames:
            out, took = cpu_cost(r.handle, conn, _raw(frame), 1)
            assert out is None, out  # handle never raises
            assert took < LIMIT_S, (frame, took)
            sent += 1
    assert sum(r.parser.errors.values()) == 3 * sent and r.parser.errors["internal"] == 0  # cpu_cost: 3 tries
    assert not r.msg_counts.get("orderbook_delta") and not r.msg_counts.get("orderbook_snapshot")


def _book(ticker: Any, yes: Any = None) -> Any:
    return {"ticker": ticker, "orderbook_fp": {"yes_dollars": yes or [["0.4100", "10.00"]], "no_dollars": []}}


BAD_BOOKS = [
    *(_book(f"BAD-{i}", [["0.5000", _big(v)]]) for i, v in enumerate(HOSTILE_NUMBERS)),
    *(_book(f"BADP-{i}", [[_big(v), "1.00"]]) for i, v in enumerate(HOSTILE_NUMBERS)),
    _book("X" * 500),
    _book("A,B"),
    _book("SHORT", [["0.5"]]),
    _book("NEG", [["0.5000", "-500.00"]]),
    {"ticker": "LEGACY", "orderbook": {"yes": [[99999900, 1]], "no": []}},
    {"ticker": "NOTDICT", "orderbook_fp": "junk"},
    "not an object",
    None,
]


def test_rest_book_parsing_refuses_each_hostile_book_within_10ms() -> None:
    for book in BAD_BOOKS:
        out, took = cpu_cost(book_of, _load(book))
        assert isinstance(out, ValueError) and took < LIMIT_S, (str(book)[:80], out, took)
    assert book_of(_load(_book("OK"))) == ("OK", [(4100, 1000)], [])
    assert parse_rest_book({"orderbook": {"yes": [[41, 10]], "no": None}}) == ([(4100, 1000)], [])


async def _no_db() -> None:
    raise RuntimeError("the writer is not started in this test: rows stay buffered")


async def test_poller_keeps_the_good_books_of_a_batch_with_hostile_ones() -> None:
    good = [_book(f"GOOD-{i}") for i in range(20)]
    body = {"orderbooks": [good[0], *BAD_BOOKS[: len(BAD_BOOKS) // 2], *good[1:], *BAD_BOOKS[len(BAD_BOOKS) // 2 :]]}
    writer = BatchWriter(SNAPSHOTS, _no_db)  # type: ignore[arg-type]
    async with hostile_api({"/markets/orderbooks": _served(body)}) as url:
        rest = KalshiRest(url, requests_per_second=0)
        try:
            poller = SnapshotPoller(rest, SnapshotPollerSettings(), writer, lambda: [], 100.0)
            t0 = time.thread_time()
            n = await poller.poll_once([f"GOOD-{i}" for i in range(20)])
            took = time.thread_time() - t0
        finally:
            await rest.close()
    assert n == 20 and len(writer) == 20
    assert {row[2] for row in writer._buf} == {f"GOOD-{i}" for i in range(20)}
    assert poller.errors == len(BAD_BOOKS)
    assert took < 1.0  # one request and 40-odd books; on 8087b5b the hostile ones took seconds


TID = "6b1f2a4e-9a43-4c5f-8f7e-0d2a3f1b9c10"
NOW_US = 1_795_791_601_000_000


def _trade(**over: Any) -> dict[str, Any]:
    t = {
        "trade_id": str(uuid.uuid4()),
        "ticker": "A",
        "count_fp": "12.00",
        "yes_price_dollars": "0.4100",
        "no_price_dollars": "0.5900",
        "taker_outcome_side": "no",
        "created_time": "2026-11-27T15:00:01.234Z",
        "is_block_trade": False,
    }
    t.update(over)
    return t


def _legacy_trade(**over: Any) -> dict[str, Any]:
    t = _trade(**over)
    for k in ("count_fp", "yes_price_dollars", "no_price_dollars"):
        if k not in over:
            del t[k]
    t.setdefault("yes_price", 41)
    t.setdefault("count", 12)
    return t


BAD_TRADES = [
    _trade(created_time="garbage"),
    _trade(created_time="9" * 5000),
    _trade(created_time=None),
    _trade(ticker="X" * 500),
    _trade(ticker="A,B"),
    _trade(ticker=None),
    _trade(trade_id="not-a-uuid"),
    _trade(trade_id=7),
    _trade(taker_outcome_side="maybe"),
    _trade(is_block_trade="yes"),
    _legacy_trade(yes_price=99999900),
    _legacy_trade(count=-500),
    _trade(count_fp="-500.00"),
    *(_trade(yes_price_dollars=_big(v)) for v in HOSTILE_NUMBERS),
    *(_trade(count_fp=_big(v)) for v in HOSTILE_NUMBERS),
    "not an object",
    None,
]


def test_rest_trade_rows_refuse_each_hostile_trade_within_10ms() -> None:
    for t in BAD_TRADES:
        out, took = cpu_cost(trade_row, _load(t), NOW_US)
        assert isinstance(out, ValueError) and took < LIMIT_S, (str(t)[:80], out, took)
    assert trade_row(_legacy_trade(ticker="L"), 7)[3:6] == ("L", 4100, 1200)


def test_rest_market_rows_refuse_each_hostile_number_within_10ms() -> None:
    for field in ("yes_bid_dollars", "last_price_dollars", "volume_fp", "open_interest_fp", "yes_ask_size_fp"):
        for v in [*HOSTILE_NUMBERS, "-500.00"]:
            m = _load({"ticker": "A", field: _big(v)})
            out, took = cpu_cost(ticker_snapshot_row, m, NOW_US)
            assert isinstance(out, ValueError) and took < LIMIT_S, (field, str(v)[:30], out, took)


def test_a_zone_less_created_time_is_utc_not_local(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert created_us("2026-11-27T15:00:01.234567") == 1_795_791_601_234_000
        assert trade_row(_trade(created_time="2026-11-27T15:00:01.234"), 7)[1] == 1_795_791_601_234_000
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def _window(tickers: tuple[str, ...] | None, channel: str = "trade") -> Window:
    lo = NOW_US - 5_000_000
    return Window("i", 1, channel, "disconnect", lo, lo, tickers=tickers, to_ts=NOW_US + 5_000_000)


def _backfill(
    rest: KalshiRest, dsn: str, writer: BatchWriter, tickers_writer: BatchWriter | None = None, **kw: Any
) -> Any:
    async def connect() -> psycopg.AsyncConnection:
        return await psycopg.AsyncConnection.connect(dsn, autocommit=True)

    return TradeBackfill(rest, None, writer, connect, tickers_writer, requests_per_second=1000, **kw)  # type: ignore[arg-type]


async def _connect_to(dsn: str) -> Any:
    return await psycopg.AsyncConnection.connect(dsn, autocommit=True)


async def test_one_malformed_trade_does_not_fail_its_backfill_window(
    gatherer_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    good = [_trade(ticker=t) for t in ("A", "B") for _ in range(5)]
    items = [good[0], *BAD_TRADES, *good[1:]]
    writer = BatchWriter(TRADES, lambda: _connect_to(gatherer_dsn), flush_ms=20)
    writer.start()
    async with hostile_api({"/markets/trades": _served({"trades": items, "cursor": ""})}) as url:
        rest = KalshiRest(url, requests_per_second=0)
        try:
            bf = _backfill(rest, gatherer_dsn, writer)
            stored = await bf.backfill(_window(None))
        finally:
            await rest.close()
            await writer.stop()
    assert stored == len(good)
    assert sum(bf.rejected.values()) == len(BAD_TRADES) and bf.status()["rejected_rows"] == len(BAD_TRADES)
    with psycopg.connect(gatherer_dsn) as conn:
        ids = {r[0] for r in conn.execute("SELECT trade_id::text FROM trades WHERE source = 'rest'")}
    assert ids == {t["trade_id"] for t in good}
    refused = [r for r in caplog.records if r.name == "kalshictl.gatherer.backfill" and "refused" in r.getMessage()]
    assert refused and len(refused) <= len(bf.rejected)  # logged, one line per reason (rate-limited)


async def test_a_reanchor_listing_keeps_its_good_markets(gatherer_dsn: str) -> None:
    good = [
        {"ticker": f"M-{i}", "status": "active", "yes_bid_dollars": "0.4100", "volume_fp": "10.00"} for i in range(5)
    ]
    bad = [
        {"ticker": "X" * 500, "status": "active"},
        {"ticker": "A B", "status": "active"},
        {"ticker": "P", "status": "active", "yes_bid_dollars": "9e999999"},
        {"ticker": "V", "status": "active", "volume_fp": "-500.00"},
        {"ticker": "L", "status": "active", "last_price_dollars": "99999900"},
        "not an object",
        7,
    ]
    tickers_writer = BatchWriter(TICKERS, lambda: _connect_to(gatherer_dsn), flush_ms=20)
    tickers_writer.start()
    listed: list[list[dict]] = []
    async with hostile_api({"/markets": {"markets": [*bad[:3], *good, *bad[3:]], "cursor": ""}}) as url:
        rest = KalshiRest(url, requests_per_second=0)
        try:
            on_markets = lambda markets, _w: listed.append(markets)  # noqa: E731
            bf = _backfill(rest, gatherer_dsn, tickers_writer, tickers_writer, on_markets=on_markets)
            n = await bf.reanchor(_window(None, "ticker"))
        finally:
            await rest.close()
            await tickers_writer.stop()
    assert n == len(good) and sum(bf.rejected.values()) == len(bad)
    assert all(isinstance(m, dict) for ms in listed for m in ms)
    with psycopg.connect(gatherer_dsn) as conn:
        rows = {r[0] for r in conn.execute("SELECT ticker FROM tickers WHERE source = 'rest'")}
    assert rows == {m["ticker"] for m in good}
