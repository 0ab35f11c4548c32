"""REST faithfulness: Kalshi SDK 3.34.0 models parse what the sim serves; pagination, filters and error shapes."""

from __future__ import annotations

import time

import aiohttp
from kalshi_python_sync.models import (
    EventData,
    ExchangeStatus,
    GetEventResponse,
    GetEventsResponse,
    GetMarketOrderbookResponse,
    GetMarketOrderbooksResponse,
    GetMarketResponse,
    GetMarketsResponse,
    GetSeriesListResponse,
    GetSeriesResponse,
    GetTradesResponse,
    Market,
    OrderbookCountFp,
    Series,
    Trade,
)
from pydantic import BaseModel

from kalshictl.sim import SimExchange
from kalshictl.units import parse_price, parse_size

from .conftest import get_json

LEGACY_MARKET_FIELDS = {
    "yes_bid", "yes_ask", "no_bid", "no_ask", "last_price", "volume", "volume_24h", "open_interest",
    "previous_yes_bid", "previous_yes_ask", "previous_price", "liquidity", "tick_size", "response_price_units",
    "risk_limit_cents", "notional_value", "fractional_trading_enabled",
}  # fmt: skip


def assert_required(model: type[BaseModel], obj: dict) -> None:
    """Every required field of ``model`` is present in the raw JSON (Optional-but-required ones too)."""
    missing = [
        (f.alias or name) for name, f in model.model_fields.items() if f.is_required() and (f.alias or name) not in obj
    ]
    assert not missing, f"{model.__name__} misses required fields {missing}"


def validate(model: type[BaseModel], obj: dict) -> BaseModel:
    """Parse as the SDK does (``from_dict``) and strictly (``model_validate``)."""
    assert_required(model, obj)
    parsed = model.from_dict(obj)
    assert parsed is not None
    model.model_validate(obj)
    return parsed


def check_market(m: dict) -> None:
    assert_required(Market, m)
    assert not LEGACY_MARKET_FIELDS & m.keys()
    for key in ("yes_bid_dollars", "yes_ask_dollars", "no_bid_dollars", "no_ask_dollars", "last_price_dollars"):
        parse_price(m[key])
    for key in ("yes_bid_size_fp", "yes_ask_size_fp", "volume_fp", "open_interest_fp"):
        parse_size(m[key])
    assert parse_price(m["yes_bid_dollars"]) + parse_price(m["no_ask_dollars"]) == 10_000


async def test_sdk_models_validate_every_endpoint(sim: SimExchange, http: aiohttp.ClientSession) -> None:
    sim.step(400)  # some trades and lifecycle changes
    base = sim.rest_url
    status, body = await get_json(http, f"{base}/exchange/status")
    assert status == 200
    validate(ExchangeStatus, body)

    status, body = await get_json(http, f"{base}/markets", limit=1000)
    assert status == 200
    parsed = validate(GetMarketsResponse, body)
    assert len(parsed.markets) == sim.universe.n_markets
    for m in body["markets"]:
        check_market(m)
    assert {m["price_level_structure"] for m in body["markets"]} == {"linear_cent", "deci_cent"}
    ticker = body["markets"][0]["ticker"]

    status, body = await get_json(http, f"{base}/markets/{ticker}")
    assert status == 200
    validate(GetMarketResponse, body)
    check_market(body["market"])

    status, body = await get_json(http, f"{base}/markets/{ticker}/orderbook", depth=0)
    assert status == 200
    validate(GetMarketOrderbookResponse, body)
    assert_required(OrderbookCountFp, body["orderbook_fp"])
    assert "orderbook" not in body

    tickers = [sim.universe.ticker(i) for i in range(5)]
    async with http.get(f"{base}/markets/orderbooks", params=[("tickers", t) for t in tickers]) as r:
        status, body = r.status, await r.json()
    assert status == 200
    validate(GetMarketOrderbooksResponse, body)
    assert [b["ticker"] for b in body["orderbooks"]] == tickers

    status, body = await get_json(http, f"{base}/markets/trades", limit=50)
    assert status == 200
    validate(GetTradesResponse, body)
    assert body["trades"], "step() produced trades"
    for t in body["trades"]:
        assert_required(Trade, t)
        assert not {"price", "count", "yes_price", "no_price"} & t.keys()

    for nested in ("false", "true"):
        status, body = await get_json(http, f"{base}/events", limit=200, with_nested_markets=nested)
        assert status == 200
        validate(GetEventsResponse, body)
        for e in body["events"]:
            assert_required(EventData, e)
            assert ("markets" in e) == (nested == "true")
    event_ticker = body["events"][0]["event_ticker"]
    status, body = await get_json(http, f"{base}/events/{event_ticker}")
    assert status == 200
    validate(GetEventResponse, body)

    status, body = await get_json(http, f"{base}/series")
    assert status == 200
    validate(GetSeriesListResponse, body)
    for s in body["series"]:
        assert_required(Series, s)
    status, body = await get_json(http, f"{base}/series/{body['series'][0]['ticker']}")
    assert status == 200
    validate(GetSeriesResponse, body)


async def test_orderbook_shape_ascending_best_last(sim: SimExchange, http: aiohttp.ClientSession) -> None:
    idx = sim.universe.busy[0]
    ticker = sim.universe.ticker(idx)
    _, body = await get_json(http, f"{sim.rest_url}/markets/{ticker}/orderbook")
    ob = body["orderbook_fp"]
    for side in ("yes_dollars", "no_dollars"):
        prices = [parse_price(p) for p, _ in ob[side]]
        assert prices == sorted(prices) and len(set(prices)) == len(prices)
    book = sim.book(ticker)
    assert [[parse_price(p), parse_size(s)] for p, s in ob["yes_dollars"]] == book["yes"]
    assert [[parse_price(p), parse_size(s)] for p, s in ob["no_dollars"]] == book["no"]
    _, body = await get_json(http, f"{sim.rest_url}/markets/{ticker}/orderbook", depth=2)
    assert body["orderbook_fp"]["yes_dollars"] == ob["yes_dollars"][-2:]
    # a market with an empty book still has both arrays
    empty = next(i for i in range(sim.universe.n_markets) if not sim.universe.peek(i).book.yes)
    _, body = await get_json(http, f"{sim.rest_url}/markets/{sim.universe.ticker(empty)}/orderbook")
    assert body["orderbook_fp"]["yes_dollars"] == [] and isinstance(body["orderbook_fp"]["no_dollars"], list)


async def test_markets_pagination_and_filters(sim: SimExchange, http: aiohttp.ClientSession) -> None:
    base = sim.rest_url
    seen: list[str] = []
    cursor = ""
    pages = 0
    while True:
        params = {"limit": 7, **({"cursor": cursor} if cursor else {})}
        status, body = await get_json(http, f"{base}/markets", **params)
        assert status == 200
        assert len(body["markets"]) <= 7
        seen += [m["ticker"] for m in body["markets"]]
        pages += 1
        cursor = body["cursor"]
        if cursor == "":
            break
    assert pages == -(-sim.universe.n_markets // 7)
    assert seen == [sim.universe.ticker(i) for i in range(sim.universe.n_markets)]

    _, body = await get_json(http, f"{base}/markets")
    assert len(body["markets"]) == 60 or body["cursor"] == ""  # default limit 100 > 60 markets
    status, body = await get_json(http, f"{base}/markets", limit=1001)
    assert status == 400 and "error" in body

    _, body = await get_json(http, f"{base}/markets", status="open", limit=1000)
    assert body["markets"] and {m["status"] for m in body["markets"]} == {"active"}
    _, body = await get_json(http, f"{base}/markets", status="settled", limit=1000)
    assert {m["status"] for m in body["markets"]} <= {"finalized"}
    status, _ = await get_json(http, f"{base}/markets", status="bogus")
    assert status == 400

    event = sim.universe.event_ticker(3)
    _, body = await get_json(http, f"{base}/markets", event_ticker=event)
    assert body["markets"] and {m["event_ticker"] for m in body["markets"]} == {event}
    series = sim.universe.series_names[0]
    _, body = await get_json(http, f"{base}/markets", series_ticker=series, limit=1000)
    assert body["markets"] and all(m["ticker"].startswith(series + "-") for m in body["markets"])
    wanted = [sim.universe.ticker(i) for i in (5, 1, 9)]
    _, body = await get_json(http, f"{base}/markets", tickers=",".join(wanted))
    assert sorted(m["ticker"] for m in body["markets"]) == sorted(wanted)

    events: list[str] = []
    cursor = ""
    while True:
        _, body = await get_json(http, f"{base}/events", limit=4, **({"cursor": cursor} if cursor else {}))
        events += [e["event_ticker"] for e in body["events"]]
        cursor = body["cursor"]
        if not cursor:
            break
    assert events == [sim.universe.event_ticker(e) for e in range(sim.universe.n_events)]


async def test_trades_pagination_and_filters(sim: SimExchange, http: aiohttp.ClientSession) -> None:
    sim.step(1500)
    base = sim.rest_url
    total = sim.trades.next_seq
    assert total > 20
    ids: list[str] = []
    cursor = ""
    while True:
        _, body = await get_json(http, f"{base}/markets/trades", limit=9, **({"cursor": cursor} if cursor else {}))
        ids += [t["trade_id"] for t in body["trades"]]
        cursor = body["cursor"]
        if not cursor:
            break
    assert len(ids) == len(set(ids)) == total
    ticker = sim.universe.ticker(sim.universe.busy[0])
    _, body = await get_json(http, f"{base}/markets/trades", ticker=ticker, limit=1000)
    assert body["trades"] and {t["ticker"] for t in body["trades"]} == {ticker}
    future = int(time.time()) + 3600
    _, body = await get_json(http, f"{base}/markets/trades", min_ts=future)
    assert body == {"trades": [], "cursor": ""}


async def test_not_found_shapes(sim: SimExchange, http: aiohttp.ClientSession) -> None:
    for path in ("/markets/NOPE-E1-T1", "/markets/NOPE/orderbook", "/events/NOPE", "/series/NOPE", "/nothing"):
        status, body = await get_json(http, sim.rest_url + path)
        assert status == 404, path
        assert set(body) == {"error"} and {"code", "message", "details"} <= set(body["error"])


async def test_rate_limit_basic_tier_429(http: aiohttp.ClientSession) -> None:
    from .conftest import config

    async with SimExchange(config(rest_tier="basic")) as ex:
        statuses = []
        for _ in range(60):  # basic: 200 tokens/s, capacity 400, 10 per request -> ~40 then 429
            async with http.get(f"{ex.rest_url}/exchange/status") as r:
                statuses.append(r.status)
                if r.status == 429:
                    assert await r.read() == b'{"error": "too many requests"}'
                    assert "Retry-After" not in r.headers
        assert 35 <= statuses.count(200) <= 50
        assert statuses.count(429) >= 10
        assert ex.stats()["rest"]["429_rate_limit"] == statuses.count(429)
