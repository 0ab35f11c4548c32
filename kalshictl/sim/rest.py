"""The REST API under ``/trade-api/v2``: Kalshi's market-data endpoints over the generated world, and the gate in
front of them (auth, rate limits, REST faults, Kalshi's error shapes; docs/sim.md "REST", "Faults")."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Container, Iterable
from typing import Any, Protocol

from aiohttp import web

from kalshictl.sim.config import REST_PREFIX
from kalshictl.sim.kalshi_http import (
    TIME_FILTERS,
    TOO_MANY,
    BadRequest,
    cursor_param,
    error_response,
    int_param,
    json_response,
    list_param,
    status_filter,
)  # fmt: skip
from kalshictl.sim.markets import Universe
from kalshictl.sim.ratelimit import RateLimiter
from kalshictl.sim.render import event_dict, market_dict, orderbook_fp, series_dict
from kalshictl.sim.stats import Stats
from kalshictl.sim.trades import TradeLog, trade_dict

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class MarketDataHandlers(Protocol):
    """One handler per route of :func:`market_data_routes` (the generated world's and the recorded one's)."""

    async def exchange_status(self, request: web.Request) -> web.Response: ...
    async def markets(self, request: web.Request) -> web.Response: ...
    async def trades(self, request: web.Request) -> web.Response: ...
    async def orderbooks(self, request: web.Request) -> web.Response: ...
    async def orderbook(self, request: web.Request) -> web.Response: ...
    async def market(self, request: web.Request) -> web.Response: ...
    async def events(self, request: web.Request) -> web.Response: ...
    async def event(self, request: web.Request) -> web.Response: ...
    async def series_list(self, request: web.Request) -> web.Response: ...
    async def series(self, request: web.Request) -> web.Response: ...


def market_data_routes(h: MarketDataHandlers) -> list[web.RouteDef]:
    """Kalshi's public market-data REST routes, static paths before parameterised ones, served by ``h``'s handlers
    (the generated world's and the recorded one's: docs/replay.md)."""
    p = REST_PREFIX
    return [
        web.get(f"{p}/exchange/status", h.exchange_status),
        web.get(f"{p}/markets", h.markets),
        web.get(f"{p}/markets/trades", h.trades),
        web.get(f"{p}/markets/orderbooks", h.orderbooks),
        web.get(f"{p}/markets/{{ticker}}/orderbook", h.orderbook),
        web.get(f"{p}/markets/{{ticker}}", h.market),
        web.get(f"{p}/events", h.events),
        web.get(f"{p}/events/{{event_ticker}}", h.event),
        web.get(f"{p}/series", h.series_list),
        web.get(f"{p}/series/{{ticker}}", h.series),
    ]


class GateFaults(Protocol):
    """The REST faults (``kalshictl.sim.faults.FaultInjector``)."""

    def roll_rest(self) -> tuple[bool, float]: ...


class RestGate:
    """The aiohttp middleware in front of every ``/trade-api/v2`` route: auth (401), rate limit (429), REST faults,
    then Kalshi-shaped errors for the handler's exceptions; counts every answer in ``stats.rest``."""

    def __init__(
        self,
        check_auth: Callable[[web.Request, str, str], str | None],
        limiter: RateLimiter,
        faults: GateFaults,
        stats: Stats,
    ) -> None:
        self.check_auth = check_auth
        self.limiter = limiter
        self.faults = faults
        self.stats = stats

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Pass everything outside ``/trade-api/v2`` through; gate the rest."""
        path = request.path
        if not path.startswith(REST_PREFIX + "/"):
            return await handler(request)
        refused = await self._refusal(request, path)
        if refused is not None:
            return refused
        return await self._answer(request, handler)

    async def _refusal(self, request: web.Request, path: str) -> web.Response | None:
        counts = self.stats.rest
        problem = self.check_auth(request, request.method, path)
        if problem is not None:
            self.stats.auth_rejected += 1
            counts["401"] += 1
            return error_response(401, "authentication_error", problem)
        client = request.headers.get("KALSHI-ACCESS-KEY") or request.remote or "anonymous"
        if not self.limiter.allow(client):
            counts["429_rate_limit"] += 1
            return web.Response(body=TOO_MANY, status=429, content_type="application/json")
        fail, delay = self.faults.roll_rest()
        if fail:
            counts["429_fault"] += 1
            return web.Response(body=TOO_MANY, status=429, content_type="application/json")
        if delay:
            await asyncio.sleep(delay)
        return None

    async def _answer(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        counts = self.stats.rest
        try:
            response = await handler(request)
        except BadRequest as exc:
            counts["400"] += 1
            return error_response(400, "bad_request", str(exc))
        except web.HTTPNotFound:
            counts["404"] += 1
            return error_response(404, "not_found", "not found")
        except web.HTTPMethodNotAllowed:
            counts["405"] += 1
            return error_response(405, "method_not_allowed", "method not allowed")
        counts[str(response.status)] += 1
        return response


class ListingOptions(Protocol):
    """The runtime option ``GET /markets`` follows (``kalshictl.sim.config.SimConfig``)."""

    @property
    def mve_listing(self) -> str: ...


class ListingFaults(Protocol):
    """The listing fault (``kalshictl.sim.faults.FaultInjector``)."""

    def roll_list_dup(self) -> bool: ...


class RestApi:
    """Kalshi's market-data handlers over the generated world: its markets, the trades of the run, the markets
    archived by the history cutoff (served only under ``/historical/…``: docs/sim.md "History")."""

    def __init__(
        self,
        universe: Universe,
        trades: TradeLog,
        archived: Container[int],
        options: ListingOptions,
        faults: ListingFaults,
    ) -> None:
        self.u = universe
        self.trade_log = trades
        self.archived = archived
        self.options = options
        self.faults = faults

    def routes(self) -> list[web.RouteDef]:
        """All REST routes (static paths before parameterised ones)."""
        return market_data_routes(self)

    # ----- handlers ---------------------------------------------------------------------------------------------
    async def exchange_status(self, request: web.Request) -> web.Response:
        """``GET /exchange/status``."""
        return json_response({"exchange_active": True, "trading_active": True})

    def _market_index(self, request: web.Request) -> int:
        idx = self.u.index_of(request.match_info["ticker"])
        if idx is None or idx in self.archived:  # settled before the cutoff: /historical/markets
            raise web.HTTPNotFound()
        return idx

    async def market(self, request: web.Request) -> web.Response:
        """``GET /markets/{ticker}``."""
        return json_response({"market": market_dict(self.u, self._market_index(request))})

    async def markets(self, request: web.Request) -> web.Response:
        """``GET /markets`` with limit/cursor/status/event_ticker/series_ticker/tickers/time filters."""
        limit = int_param(request, "limit", 100, 1, 1000)
        start = cursor_param(request, "m")
        keep = self._market_filter(request)
        out: list[dict] = []
        next_cursor = ""
        for idx in self._market_candidates(request, start):
            if idx < start or not keep(idx):
                continue
            if len(out) == limit:
                next_cursor = f"m{idx:x}"
                break
            out.append(market_dict(self.u, idx))
        out.extend([m for m in out if self.faults.roll_list_dup()])  # changed while the listing was paged: twice
        return json_response({"markets": out, "cursor": next_cursor})

    def _market_filter(self, request: web.Request) -> Callable[[int], bool]:
        """Which markets ``GET /markets`` lists: not archived, and by ``status``, ``mve_filter``, the time filters."""
        u = self.u
        archived = self.archived
        statuses = status_filter(request)
        mve_filter = request.query.get("mve_filter") or None
        if mve_filter not in (None, "only", "exclude"):
            raise BadRequest("mve_filter must be 'only' or 'exclude'")
        if (
            mve_filter is None and self.options.mve_listing == "exclude"
        ):  # the reading where the default leaves them out
            mve_filter = "exclude"
        want_mve = mve_filter == "only"
        times = {k: v for k in TIME_FILTERS if (v := int_param(request, k, None)) is not None}

        def keep(idx: int) -> bool:
            if idx in archived or (statuses is not None and u.status(idx) not in statuses):
                return False
            if times and not self._time_match(idx, times):
                return False
            return mve_filter is None or u.is_mve(idx) == want_mve

        return keep

    def _market_candidates(self, request: web.Request, start: int) -> Iterable[int]:
        """The market indexes named by ``tickers``, ``event_ticker`` or ``series_ticker`` (in order), else all."""
        u = self.u
        tickers = list_param(request, "tickers")
        events = list_param(request, "event_ticker")
        series = request.query.get("series_ticker")
        if tickers:
            return sorted({i for i in map(u.index_of, tickers) if i is not None})
        if events:
            return sorted(i for e in map(u.event_index, events) if e is not None for i in u.event_markets(e))
        if series:
            s = u.series_index.get(series)
            return [] if s is None else [i for e in u.series_events[s] for i in u.event_markets(e)]
        return range(start, u.n_markets)

    def _time_match(self, idx: int, times: dict[str, int]) -> bool:
        st = self.u.peek(idx)
        values = {"close": st.close_ts, "created": st.created_ts, "updated": st.updated_ts, "settled": st.settled_ts}
        for key, bound in times.items():
            edge, _, field = key.partition("_")
            value = values[field.removesuffix("_ts")]
            if (edge == "min" and value < bound) or (edge == "max" and value > bound):
                return False
        return True

    async def orderbook(self, request: web.Request) -> web.Response:
        """``GET /markets/{ticker}/orderbook?depth=N`` (0 = all)."""
        idx = self._market_index(request)
        depth = int_param(request, "depth", 0, 0, 100)
        return json_response({"orderbook_fp": orderbook_fp(self.u.peek(idx).book, depth)})

    async def orderbooks(self, request: web.Request) -> web.Response:
        """``GET /markets/orderbooks?tickers=A&tickers=B``: 1-100 *repeated* values of <= 200 characters each.

        As in Kalshi's OpenAPI (``style: form, explode: true``) a comma-joined value is one ticker, not a list: an
        unknown market (no book returned), or HTTP 400 when it is longer than 200 characters.
        """
        tickers = request.query.getall("tickers", [])
        if not 1 <= len(tickers) <= 100:
            raise BadRequest("tickers: between 1 and 100 values required")
        for t in tickers:
            if not t or len(t) > 200:
                raise BadRequest("tickers: each value must be 1-200 characters")
        books = []
        for t in tickers:
            idx = self.u.index_of(t)
            if idx is not None:
                books.append({"ticker": t, "orderbook_fp": orderbook_fp(self.u.peek(idx).book)})
        return json_response({"orderbooks": books})

    async def trades(self, request: web.Request) -> web.Response:
        """``GET /markets/trades`` newest first: ``limit`` (1-1000, 0 or absent = 100), ``cursor``, ``ticker``,
        ``min_ts``/``max_ts`` (Unix **seconds**, both inclusive), ``is_block_trade`` (the sim has no block trades)."""
        limit = int_param(request, "limit", 100, 0, 1000) or 100
        raw = request.query.get("cursor") or ""
        before = cursor_param(request, "t") if raw else None
        if request.query.get("is_block_trade") == "true":
            return json_response({"trades": [], "cursor": ""})
        page, nxt = self.trade_log.page(
            limit,
            before,
            request.query.get("ticker") or None,
            int_param(request, "min_ts", None),
            int_param(request, "max_ts", None),
        )
        return json_response({"trades": [trade_dict(t) for t in page], "cursor": "" if nxt is None else f"t{nxt:x}"})

    async def events(self, request: web.Request) -> web.Response:
        """``GET /events`` with limit (<= 200)/cursor/status/series_ticker/with_nested_markets."""
        u = self.u
        limit = int_param(request, "limit", 200, 1, 200)
        start = cursor_param(request, "e")
        statuses = status_filter(request)
        nested = request.query.get("with_nested_markets", "false").lower() == "true"
        series = request.query.get("series_ticker")
        tickers = list_param(request, "tickers")
        min_close = int_param(request, "min_close_ts", None)
        if tickers:
            candidates: Any = sorted({e for e in map(u.event_index, tickers) if e is not None})
        elif series:
            s = u.series_index.get(series)
            candidates = [] if s is None else u.series_events[s]
        else:
            candidates = range(start, u.n_events)
        out: list[dict] = []
        next_cursor = ""
        for e in candidates:
            if e < start:
                continue
            if u.is_mve_event(e):
                continue  # multivariate events are served by /events/multivariate, not here
            if statuses is not None and not any(u.status(i) in statuses for i in u.event_markets(e)):
                continue
            if min_close is not None and u.event_times(e)[2] < min_close:
                continue
            if len(out) == limit:
                next_cursor = f"e{e:x}"
                break
            out.append(event_dict(u, e, nested))
        return json_response({"events": out, "cursor": next_cursor})

    async def event(self, request: web.Request) -> web.Response:
        """``GET /events/{event_ticker}``: ``{event, markets}``."""
        e = self.u.event_index(request.match_info["event_ticker"])
        if e is None:
            raise web.HTTPNotFound()
        nested = request.query.get("with_nested_markets", "false").lower() == "true"
        markets = [market_dict(self.u, i) for i in self.u.event_markets(e)]
        return json_response({"event": event_dict(self.u, e, nested), "markets": markets})

    async def series_list(self, request: web.Request) -> web.Response:
        """``GET /series`` (all series; no cursor, as in SDK 3.34.0)."""
        category = request.query.get("category")
        out = [series_dict(self.u, s) for s in range(len(self.u.series_names))]
        if category:
            out = [s for s in out if category in s["categories"]]
        return json_response({"series": out})

    async def series(self, request: web.Request) -> web.Response:
        """``GET /series/{ticker}``."""
        s = self.u.series_index.get(request.match_info["ticker"])
        if s is None:
            raise web.HTTPNotFound()
        return json_response({"series": series_dict(self.u, s)})
