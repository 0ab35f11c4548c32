"""The local exchange's past (``history_days``): shapes parse with Kalshi SDK 3.34.0 models, the cutoff splits
markets and trades between ``/historical/…`` and the live endpoints, cursors page everything exactly once, the
documented limits answer 400, and candles agree with the recorded trades and quotes (docs/sim.md, "History")."""

from __future__ import annotations

import aiohttp
import pytest
from kalshi_python_sync.models import (
    BatchGetMarketCandlesticksResponse,
    GetHistoricalCutoffResponse,
    GetMarketCandlesticksHistoricalResponse,
    GetMarketCandlesticksResponse,
    GetMarketsResponse,
    GetTradesResponse,
)

from kalshictl.sim import SimExchange
from kalshictl.sim.fmt import iso
from kalshictl.units import parse_price, parse_size

from .conftest import ANCHOR, get_json

HISTORY = {"history_days": 4, "markets": 40}
FAR = 2**40


def live_market(ex: SimExchange) -> str:
    h = ex.history
    return next(t for t, m in sorted(h.markets.items()) if m.idx not in h.archived_idx and m.trades)


def archived_market(ex: SimExchange) -> str:
    h = ex.history
    return next(t for t, m in sorted(h.markets.items()) if m.idx in h.archived_idx and m.trades)


async def pages(http: aiohttp.ClientSession, url: str, key: str, **params: object) -> list[dict]:
    out: list[dict] = []
    cursor = ""
    while True:
        status, body = await get_json(http, url, **params, **({"cursor": cursor} if cursor else {}))
        assert status == 200, body
        out += body[key]
        cursor = body["cursor"]
        if not cursor:
            return out


@pytest.mark.parametrize("sim", [HISTORY], indirect=True)
async def test_cutoff_splits_markets_between_historical_and_live(sim: SimExchange, http: aiohttp.ClientSession):
    h = sim.history
    assert h.cutoff_ts == ANCHOR - 2 * 86_400 and len(h.markets) == 4 * 12
    status, body = await get_json(http, sim.rest_url + "/historical/cutoff")
    assert status == 200 and body["market_settled_ts"] == body["trades_created_ts"] == iso(h.cutoff_ts)
    GetHistoricalCutoffResponse.model_validate(body)

    archived = await pages(http, sim.rest_url + "/historical/markets", "markets", limit=7)
    GetMarketsResponse.model_validate({"markets": archived, "cursor": ""})
    names = [m["ticker"] for m in archived]
    assert len(names) == len(set(names)) == len(h.archived_idx) > 0
    assert all(m["status"] == "finalized" and m["settlement_ts"] < iso(h.cutoff_ts) for m in archived)
    live = await pages(http, sim.rest_url + "/markets", "markets", limit=1000)
    live_names = {m["ticker"] for m in live}
    assert not live_names & set(names)  # settled before the cutoff: only under /historical
    assert {t for t, m in h.markets.items() if m.idx not in h.archived_idx} <= live_names

    one = names[0]
    assert (await get_json(http, f"{sim.rest_url}/historical/markets/{one}"))[0] == 200
    assert (await get_json(http, f"{sim.rest_url}/markets/{one}"))[0] == 404
    assert (await get_json(http, f"{sim.rest_url}/historical/markets/{live_market(sim)}"))[0] == 404
    series = h.markets[one].series
    by_series = await pages(http, sim.rest_url + "/historical/markets", "markets", series_ticker=series)
    assert {m["ticker"] for m in by_series} == {t for t in names if h.markets[t].series == series}


@pytest.mark.parametrize("sim", [HISTORY], indirect=True)
async def test_trades_split_at_the_cutoff_and_page_exactly_once(sim: SimExchange, http: aiohttp.ClientSession):
    h = sim.history
    old = await pages(http, sim.rest_url + "/historical/trades", "trades", limit=97)
    GetTradesResponse.model_validate({"trades": old, "cursor": ""})
    new = await pages(http, sim.rest_url + "/markets/trades", "trades", limit=1000)
    ids = [t["trade_id"] for t in old + new]
    assert len(ids) == len(set(ids))
    assert set(ids) == {t.trade_id for t in h.all_trades()}
    assert all(t["created_time"] < iso(h.cutoff_ts) for t in old)
    assert all(t["created_time"] >= iso(h.cutoff_ts) for t in new)
    assert [t["created_time"] for t in old] == sorted((t["created_time"] for t in old), reverse=True)
    # ticker and an inclusive [min_ts, max_ts] window
    ticker = archived_market(sim)
    truth = [t for t in h.markets[ticker].trades if t.ts_ms // 1000 < h.cutoff_ts]
    lo, hi = truth[1].ts_ms // 1000, truth[-2].ts_ms // 1000
    got = await pages(http, sim.rest_url + "/historical/trades", "trades", ticker=ticker, min_ts=lo, max_ts=hi, limit=5)
    assert {t["trade_id"] for t in got} == {t.trade_id for t in truth if lo <= t.ts_ms // 1000 <= hi}


@pytest.mark.parametrize("sim", [HISTORY], indirect=True)
async def test_candles_match_recorded_trades_and_quotes(sim: SimExchange, http: aiohttp.ClientSession):
    h = sim.history
    ticker = archived_market(sim)
    pm = h.markets[ticker]
    status, body = await get_json(
        http, f"{sim.rest_url}/historical/markets/{ticker}/candlesticks", start_ts=0, end_ts=FAR, period_interval=1
    )
    assert status == 200
    GetMarketCandlesticksHistoricalResponse.model_validate(body)
    candles = body["candlesticks"]
    assert sum(parse_size(c["volume"]) for c in candles) == sum(t.size for t in pm.trades)
    traded = [c for c in candles if c["price"]["close"] is not None]
    assert parse_price(traded[-1]["price"]["close"]) == pm.trades[-1].yes_price
    assert all(parse_price(c["yes_bid"]["low"]) <= parse_price(c["yes_bid"]["high"]) for c in candles)
    assert parse_size(candles[-1]["open_interest"]) == pm.oi_after[-1]
    ends = [c["end_period_ts"] for c in candles]
    assert ends == sorted(ends) and all(e % 60 == 0 for e in ends) and ends[0] > pm.open_ts >= ends[0] - 60
    # the daily candle of the whole market = every trade
    _, day = await get_json(
        http, f"{sim.rest_url}/historical/markets/{ticker}/candlesticks", start_ts=0, end_ts=FAR, period_interval=1440
    )
    assert sum(parse_size(c["volume"]) for c in day["candlesticks"]) == sum(t.size for t in pm.trades)
    # live: *_dollars / *_fp names, and the archived market is not there
    live = live_market(sim)
    series = h.markets[live].series
    url = f"{sim.rest_url}/series/{series}/markets/{live}/candlesticks"
    status, body = await get_json(http, url, start_ts=0, end_ts=FAR, period_interval=60)
    assert status == 200 and "volume_fp" in body["candlesticks"][0] and "volume" not in body["candlesticks"][0]
    GetMarketCandlesticksResponse.model_validate(body)
    assert sum(parse_size(c["volume_fp"]) for c in body["candlesticks"]) == sum(t.size for t in h.markets[live].trades)
    url = f"{sim.rest_url}/series/{h.markets[ticker].series}/markets/{ticker}/candlesticks"
    assert (await get_json(http, url, start_ts=0, end_ts=FAR, period_interval=60))[0] == 404
    status, body = await get_json(
        http, f"{sim.rest_url}/markets/candlesticks", market_tickers=f"{live},{ticker}", start_ts=0, end_ts=FAR,
        period_interval=60,
    )  # fmt: skip
    assert status == 200 and [m["market_ticker"] for m in body["markets"]] == [live]
    BatchGetMarketCandlesticksResponse.model_validate(body)


@pytest.mark.parametrize("sim", [HISTORY], indirect=True)
async def test_documented_limits_answer_400(sim: SimExchange, http: aiohttp.ClientSession):
    u = sim.rest_url
    ticker = archived_market(sim)
    bad = [
        (u + "/historical/markets", {"tickers": ticker, "series_ticker": "KX"}),  # filters are mutually exclusive
        (u + "/historical/markets", {"limit": 1001}),
        (u + "/historical/markets", {"mve_filter": "only"}),
        (u + "/historical/trades", {"limit": 1001}),
        (u + "/historical/trades", {"cursor": "garbage"}),
        (u + f"/historical/markets/{ticker}/candlesticks", {"start_ts": 0, "end_ts": FAR}),  # period required
        (u + f"/historical/markets/{ticker}/candlesticks", {"start_ts": 0, "end_ts": FAR, "period_interval": 5}),
        (
            u + "/markets/candlesticks",
            {"market_tickers": ",".join(["A"] * 101), "start_ts": 0, "end_ts": 1, "period_interval": 1},
        ),
    ]
    for url, params in bad:
        status, body = await get_json(http, url, **params)
        assert status == 400 and body["error"]["code"] == "bad_request", (url, params, body)


@pytest.mark.parametrize("sim", [{"history_days": 6, "markets": 40, "history_markets_per_day": 40}], indirect=True)
async def test_batch_candles_stop_at_ten_thousand(sim: SimExchange, http: aiohttp.ClientSession):
    h = sim.history
    live = [t for t, m in sorted(h.markets.items()) if m.idx not in h.archived_idx][:20]
    assert sum(h.candle_count(t, 1, 0, FAR) for t in live) > 10_000
    _, body = await get_json(
        http, sim.rest_url + "/markets/candlesticks", market_tickers=",".join(live), start_ts=0, end_ts=FAR,
        period_interval=1,
    )  # fmt: skip
    assert sum(len(m["candlesticks"]) for m in body["markets"]) == 10_000


async def test_no_history_by_default(sim: SimExchange, http: aiohttp.ClientSession):
    assert not sim.history.markets
    status, body = await get_json(http, sim.rest_url + "/historical/trades")
    assert status == 200 and body == {"trades": [], "cursor": ""}
