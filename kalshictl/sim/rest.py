"""The REST API under ``/trade-api/v2``: market data endpoints, Kalshi's error shapes, auth, rate limits, faults."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from kalshictl.sim.config import REST_PREFIX
from kalshictl.sim.markets import ACTIVE, CLOSED, DETERMINED, FINALIZED, INACTIVE, INITIALIZED
from kalshictl.sim.render import event_dict, market_dict, orderbook_fp, series_dict
from kalshictl.sim.trades import trade_dict

if TYPE_CHECKING:
    from kalshictl.sim.exchange import SimExchange

# Kalshi's status filter values -> market statuses
STATUS_FILTER = {
    "unopened": frozenset((INITIALIZED,)),
    "open": frozenset((ACTIVE,)),
    "paused": frozenset((INACTIVE,)),
    "closed": frozenset((CLOSED, DETERMINED, "disputed", "amended")),
    "settled": frozenset((FINALIZED,)),
}
TIME_FILTERS = tuple(f"{e}_{f}_ts" for f in ("close", "created", "updated", "settled") for e in ("min", "max"))
TOO_MANY = b'{"error": "too many requests"}'


def json_response(obj: Any, status: int = 200) -> web.Response:
    """Serialise with orjson."""
    return web.Response(body=orjson.dumps(obj), status=status, content_type="application/json")


def error_response(status: int, code: str, message: str, details: str = "") -> web.Response:
    """Kalshi's error shape: ``{"error": {"code", "message", "details"}}``."""
    return json_response({"error": {"code": code, "message": message, "details": details}}, status)


class BadRequest(Exception):
    """Answer 400 with this message."""


def _int(request: web.Request, name: str, default: int | None, lo: int | None = None, hi: int | None = None) -> Any:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer") from None
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise BadRequest(f"{name} must be within [{lo}, {hi}]")
    return value


def _list(request: web.Request, name: str) -> list[str]:
    out: list[str] = []
    for raw in request.query.getall(name, []):
        out.extend(t for t in raw.split(",") if t)
    return out


def _cursor(request: web.Request, prefix: str) -> int:
    raw = request.query.get("cursor") or ""
    if not raw:
        return 0
    if not raw.startswith(prefix):
        raise BadRequest("invalid cursor")
    try:
        return int(raw[len(prefix) :], 16)
    except ValueError:
        raise BadRequest("invalid cursor") from None


def status_filter(request: web.Request) -> frozenset[str] | None:
    raw = request.query.get("status")
    if not raw:
        return None
    out: set[str] = set()
    for s in raw.split(","):
        if s not in STATUS_FILTER:
            raise BadRequest(f"invalid status filter {s!r}")
        out |= STATUS_FILTER[s]
    return frozenset(out)


def market_data_routes(h: Any) -> list[web.RouteDef]:
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


class RestApi:
    """Route handlers bound to one exchange."""

    def __init__(self, ex: SimExchange) -> None:
        self.ex = ex
        self.u = ex.universe

    def routes(self) -> list[web.RouteDef]:
        """All REST routes (static paths before parameterised ones)."""
        return market_data_routes(self)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Auth (401), rate limit (429), REST faults, then Kalshi-shaped errors for the handler's exceptions."""
        path = request.path
        if not path.startswith(REST_PREFIX + "/"):
            return await handler(request)
        ex = self.ex
        stats = ex.counters.rest
        problem = ex.check_auth(request, request.method, path)
        if problem is not None:
            ex.counters.auth_rejected += 1
            stats["401"] += 1
            return error_response(401, "authentication_error", problem)
        client = request.headers.get("KALSHI-ACCESS-KEY") or request.remote or "anonymous"
        if not ex.limiter.allow(client):
            stats["429_rate_limit"] += 1
            return web.Response(body=TOO_MANY, status=429, content_type="application/json")
        fail, delay = ex.faults.roll_rest()
        if fail:
            stats["429_fault"] += 1
            return web.Response(body=TOO_MANY, status=429, content_type="application/json")
        if delay:
            await asyncio.sleep(delay)
        try:
            response = await handler(request)
        except BadRequest as exc:
            stats["400"] += 1
            return error_response(400, "bad_request", str(exc))
        except web.HTTPNotFound:
            stats["404"] += 1
            return error_response(404, "not_found", "not found")
        except web.HTTPMethodNotAllowed:
            stats["405"] += 1
            return error_response(405, "method_not_allowed", "method not allowed")
        stats[str(response.status)] += 1
        return response

    # ----- handlers ---------------------------------------------------------------------------------------------
    async def exchange_status(self, request: web.Request) -> web.Response:
        """``GET /exchange/status``."""
        return json_response({"exchange_active": True, "trading_active": True})

    def _market_index(self, request: web.Request) -> int:
        idx = self.u.index_of(request.match_info["ticker"])
        if idx is None or idx in self.ex.history.archived_idx:  # settled before the cutoff: /historical/markets
            raise web.HTTPNotFound()
        return idx

    async def market(self, request: web.Request) -> web.Response:
        """``GET /markets/{ticker}``."""
        return json_response({"market": market_dict(self.u, self._market_index(request))})

    async def markets(self, request: web.Request) -> web.Response:
        """``GET /markets`` with limit/cursor/status/event_ticker/series_ticker/tickers/time filters."""
        u = self.u
        limit = _int(request, "limit", 100, 1, 1000)
        start = _cursor(request, "m")
        statuses = status_filter(request)
        mve_filter = request.query.get("mve_filter") or None
        if mve_filter not in (None, "only", "exclude"):
            raise BadRequest("mve_filter must be 'only' or 'exclude'")
        if mve_filter is None and self.ex.cfg.mve_listing == "exclude":  # the reading where the default leaves them out
            mve_filter = "exclude"
        times = {k: _int(request, k, None) for k in TIME_FILTERS}
        times = {k: v for k, v in times.items() if v is not None}
        tickers = _list(request, "tickers")
        events = _list(request, "event_ticker")
        series = request.query.get("series_ticker")
        if tickers:
            candidates: Any = sorted({i for i in map(u.index_of, tickers) if i is not None})
        elif events:
            candidates = sorted(i for e in map(u.event_index, events) if e is not None for i in u.event_markets(e))
        elif series:
            s = u.series_index.get(series)
            candidates = [] if s is None else [i for e in u.series_events[s] for i in u.event_markets(e)]
        else:
            candidates = range(start, u.n_markets)
        out: list[dict] = []
        next_cursor = ""
        archived = self.ex.history.archived_idx
        for idx in candidates:
            if idx < start or idx in archived:
                continue
            if statuses is not None and u.status(idx) not in statuses:
                continue
            if times and not self._time_match(idx, times):
                continue
            if mve_filter is not None and u.is_mve(idx) != (mve_filter == "only"):
                continue
            if len(out) == limit:
                next_cursor = f"m{idx:x}"
                break
            out.append(market_dict(u, idx))
        if self.ex.faults.spec.probs.get("list_dup"):  # a market that changed while the listing was paged: twice
            out.extend([m for m in out if self.ex.faults.roll_list_dup()])
        return json_response({"markets": out, "cursor": next_cursor})

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
        depth = _int(request, "depth", 0, 0, 100)
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
        limit = _int(request, "limit", 100, 0, 1000) or 100
        raw = request.query.get("cursor") or ""
        before = _cursor(request, "t") if raw else None
        if request.query.get("is_block_trade") == "true":
            return json_response({"trades": [], "cursor": ""})
        page, nxt = self.ex.trades.page(
            limit,
            before,
            request.query.get("ticker") or None,
            _int(request, "min_ts", None),
            _int(request, "max_ts", None),
        )
        return json_response({"trades": [trade_dict(t) for t in page], "cursor": "" if nxt is None else f"t{nxt:x}"})

    async def events(self, request: web.Request) -> web.Response:
        """``GET /events`` with limit (<= 200)/cursor/status/series_ticker/with_nested_markets."""
        u = self.u
        limit = _int(request, "limit", 200, 1, 200)
        start = _cursor(request, "e")
        statuses = status_filter(request)
        nested = request.query.get("with_nested_markets", "false").lower() == "true"
        series = request.query.get("series_ticker")
        tickers = _list(request, "tickers")
        min_close = _int(request, "min_close_ts", None)
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
