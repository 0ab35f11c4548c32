"""REST endpoints of the past: the cutoff, historical markets and trades, and candlesticks (docs/sim.md, "History").

Shapes follow Kalshi's OpenAPI pages cited in docs/sim.md: the historical candle (``MarketCandlestickHistorical``)
names its fields ``open``/``volume``/``open_interest`` (fixed-point strings), the live one (``MarketCandlestick``)
``open_dollars``/``volume_fp``/``open_interest_fp``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from kalshictl.sim.config import REST_PREFIX
from kalshictl.sim.fmt import PRICE_STR, iso, size_str
from kalshictl.sim.history import PERIODS, Candle, HistoryWorld
from kalshictl.sim.kalshi_http import BadRequest, cursor_param, int_param, json_response, list_param
from kalshictl.sim.markets import Universe
from kalshictl.sim.render import market_dict
from kalshictl.sim.trades import trade_dict

MAX_BATCH_TICKERS = 100
MAX_BATCH_CANDLES = 10_000


def _ohlc(values: tuple[int, ...], suffix: str) -> dict[str, str]:
    return {f"{k}{suffix}": PRICE_STR[v] for k, v in zip(("open", "low", "high", "close"), values, strict=False)}


def candle_dict(c: Candle, live: bool) -> dict[str, Any]:
    """A live ``MarketCandlestick`` (``live``) or a ``MarketCandlestickHistorical``."""
    sfx = "_dollars" if live else ""
    names = ("open", "low", "high", "close", "mean")
    price: dict[str, Any] = {f"{k}{sfx}": None for k in names}
    if c.price is not None:
        price = {f"{k}{sfx}": PRICE_STR[v] for k, v in zip(names, c.price, strict=True)}
    price[f"previous{sfx}"] = None if c.previous is None else PRICE_STR[c.previous]
    return {
        "end_period_ts": c.end_ts,
        "yes_bid": _ohlc(c.yes_bid, sfx),
        "yes_ask": _ohlc(c.yes_ask, sfx),
        "price": price,
        ("volume_fp" if live else "volume"): size_str(c.volume),
        ("open_interest_fp" if live else "open_interest"): size_str(c.open_interest),
    }


def _candle_params(request: web.Request) -> tuple[int, int, int]:
    values = []
    for name in ("start_ts", "end_ts", "period_interval"):
        value = int_param(request, name, None)
        if value is None:
            raise BadRequest(f"{name} is required")
        values.append(value)
    start, end, period = values
    if period not in PERIODS:
        raise BadRequest("period_interval must be one of 1, 60, 1440")
    if end < start:
        raise BadRequest("end_ts must not be before start_ts")
    return start, end, period


class HistoryApi:
    """Route handlers for the past of the generated world (its :class:`HistoryWorld` over its markets)."""

    def __init__(self, history: HistoryWorld, universe: Universe) -> None:
        self.history = history
        self.u = universe

    def routes(self) -> list[web.RouteDef]:
        """Register these before :class:`~kalshictl.sim.rest.RestApi`'s (``/markets/{ticker}`` would match first)."""
        p = REST_PREFIX
        return [
            web.get(f"{p}/historical/cutoff", self.cutoff),
            web.get(f"{p}/historical/markets", self.markets),
            web.get(f"{p}/historical/markets/{{ticker}}/candlesticks", self.historical_candles),
            web.get(f"{p}/historical/markets/{{ticker}}", self.market),
            web.get(f"{p}/historical/trades", self.trades),
            web.get(f"{p}/markets/candlesticks", self.batch_candles),
            web.get(f"{p}/series/{{series}}/markets/{{ticker}}/candlesticks", self.live_candles),
        ]

    async def cutoff(self, request: web.Request) -> web.Response:
        """``GET /historical/cutoff``: one cutoff for markets, trades, orders and positions."""
        ts = iso(self.history.cutoff_ts)
        return json_response(
            {
                "market_settled_ts": ts,
                "trades_created_ts": ts,
                "orders_updated_ts": ts,
                "market_positions_last_updated_ts": ts,
            }
        )

    async def markets(self, request: web.Request) -> web.Response:
        """``GET /historical/markets``: limit (0-1000, 0 = 100), cursor, and one of tickers / event_ticker /
        series_ticker / mve_filter (the filters are mutually exclusive: two at once is a 400)."""
        limit = int_param(request, "limit", 100, 0, 1000) or 100
        start = cursor_param(request, "m")
        out: list[dict] = []
        cursor = ""
        for idx in self._archived_markets(request):
            if idx < start:
                continue
            if len(out) == limit:
                cursor = f"m{idx:x}"
                break
            out.append(market_dict(self.u, idx))
        return json_response({"markets": out, "cursor": cursor})

    def _archived_markets(self, request: web.Request) -> list[int]:
        """The archived markets (ascending) that the one filter of ``GET /historical/markets`` names."""
        h, u = self.history, self.u
        tickers = list_param(request, "tickers")
        event = request.query.get("event_ticker") or None
        series = request.query.get("series_ticker") or None
        mve = request.query.get("mve_filter") or None
        if sum(x is not None and x != [] for x in (tickers, event, series, mve)) > 1:
            raise BadRequest("tickers, event_ticker, series_ticker and mve_filter are mutually exclusive")
        if mve not in (None, "exclude"):
            raise BadRequest("mve_filter must be 'exclude'")
        candidates = sorted(h.archived_idx)
        if tickers:
            wanted = set(tickers)
            return [i for i in candidates if u.ticker(i) in wanted]
        if event:
            return [i for i in candidates if u.event_ticker(u.mk_event[i]) == event]
        if series:
            return [i for i in candidates if h.by_idx[i].series == series]
        if mve:
            return [i for i in candidates if not u.is_mve(i)]
        return candidates

    async def market(self, request: web.Request) -> web.Response:
        """``GET /historical/markets/{ticker}`` (404 unless it settled before the cutoff)."""
        h = self.history
        ticker = request.match_info["ticker"]
        if not h.archived(ticker):
            raise web.HTTPNotFound()
        return json_response({"market": market_dict(self.u, h.markets[ticker].idx)})

    async def trades(self, request: web.Request) -> web.Response:
        """``GET /historical/trades`` newest first: limit (0-1000, 0 = 100), cursor, ticker, min_ts/max_ts (Unix
        seconds, inclusive), is_block_trade (the sim has no block trades)."""
        limit = int_param(request, "limit", 100, 0, 1000) or 100
        before = cursor_param(request, "h") if request.query.get("cursor") else None
        if request.query.get("is_block_trade") == "true":
            return json_response({"trades": [], "cursor": ""})
        page, nxt = self.history.trades_page(
            limit,
            before,
            request.query.get("ticker") or None,
            int_param(request, "min_ts", None),
            int_param(request, "max_ts", None),
        )
        trades = [trade_dict(t) for t in page]
        for t in trades:
            if t["trade_id"] in self.history.malformed:
                t["count_fp"] = "1.005"  # not a whole hundredth of a contract
        return json_response({"trades": trades, "cursor": "" if nxt is None else f"h{nxt:x}"})

    async def historical_candles(self, request: web.Request) -> web.Response:
        """``GET /historical/markets/{ticker}/candlesticks`` of a market settled before the cutoff."""
        ticker = request.match_info["ticker"]
        start, end, period = _candle_params(request)
        h = self.history
        if not h.archived(ticker):
            raise web.HTTPNotFound()
        candles = [candle_dict(c, live=False) for c in h.candles(ticker, period, start, end)]
        return json_response({"ticker": ticker, "candlesticks": candles})

    async def live_candles(self, request: web.Request) -> web.Response:
        """``GET /series/{series}/markets/{ticker}/candlesticks``: a live market's candles (a market of the run
        itself has none recorded before the run: an empty list); 404 for an unknown or archived market."""
        ticker = request.match_info["ticker"]
        start, end, period = _candle_params(request)
        u = self.u
        idx = u.index_of(ticker)
        if idx is None or self.history.archived(ticker):
            raise web.HTTPNotFound()
        if u.series_names[u.ev_series[u.mk_event[idx]]] != request.match_info["series"]:
            raise web.HTTPNotFound()
        candles = [candle_dict(c, live=True) for c in self.history.candles(ticker, period, start, end)]
        return json_response({"ticker": ticker, "candlesticks": candles})

    async def batch_candles(self, request: web.Request) -> web.Response:
        """``GET /markets/candlesticks``: ``market_tickers`` (comma-separated, 1-100) of live markets; up to 10,000
        candles in all (a market past that budget is cut short; unknown and archived markets are left out)."""
        tickers = list_param(request, "market_tickers")
        if not 1 <= len(tickers) <= MAX_BATCH_TICKERS:
            raise BadRequest(f"market_tickers: between 1 and {MAX_BATCH_TICKERS} tickers required")
        start, end, period = _candle_params(request)
        budget = MAX_BATCH_CANDLES
        out = []
        for ticker in dict.fromkeys(tickers):
            if self.u.index_of(ticker) is None or self.history.archived(ticker):
                continue
            candles = self.history.candles(ticker, period, start, end)[:budget]
            budget -= len(candles)
            out.append({"market_ticker": ticker, "candlesticks": [candle_dict(c, live=True) for c in candles]})
        return json_response({"markets": out})
