"""Kalshi's REST answers as of the replay clock, read from production (docs/replay.md "REST").

Market metadata is production's ``markets``/``events``/``series`` rows (the latest objects the deduplicator synced);
what changes over time is rebuilt as of the clock: prices, sizes, volume and open interest from the last recorded
``ticker`` update, ``status`` from the last recorded lifecycle event (else from the open and close times), books from
the replay's own books, trades up to the clock. Markets created after the clock are not listed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from kalshictl.replay.session import RecordedFeed
from kalshictl.research.times import iso
from kalshictl.sim.config import REST_PREFIX
from kalshictl.sim.fmt import PRICE_STR, size_str
from kalshictl.sim.kalshi_http import (
    BadRequest,
    error_response,
    int_param,
    json_response,
    list_param,
    status_filter,
)  # fmt: skip
from kalshictl.sim.rest import market_data_routes
from kalshictl.sim.subscriptions import MVE_PREFIX
from kalshictl.units import PRICE_MAX

if TYPE_CHECKING:
    import psycopg

    from kalshictl.replay.source import Scope

# lifecycle event_type -> the market status it leaves (Kalshi's market_lifecycle_v2: docs/sim.md, "WebSocket")
STATUS_AFTER = {"activated": "active", "deactivated": "inactive", "determined": "determined", "settled": "finalized"}
_TICKER_FIELDS = (
    ("yes_bid", "yes_bid_dollars", "price"),
    ("yes_ask", "yes_ask_dollars", "price"),
    ("last_price", "last_price_dollars", "price"),
    ("volume", "volume_fp", "size"),
    ("open_interest", "open_interest_fp", "size"),
    ("yes_bid_size", "yes_bid_size_fp", "size"),
    ("yes_ask_size", "yes_ask_size_fp", "size"),
)
PAGE = 500


def _instant(text: Any) -> int | None:
    from kalshictl.errors import ConfigError
    from kalshictl.research.times import parse_instant

    if not isinstance(text, str) or not text:
        return None
    try:
        return parse_instant(text)
    except ConfigError:
        return None


def _market_filter(request: web.Request) -> Callable[[dict], bool]:
    """Which market objects ``GET /markets`` lists by ``status``, ``mve_filter`` and the close-time filters."""
    statuses = status_filter(request)
    mve = request.query.get("mve_filter") or None
    if mve not in (None, "only", "exclude"):
        raise BadRequest("mve_filter must be 'only' or 'exclude'")
    min_close, max_close = int_param(request, "min_close_ts", None), int_param(request, "max_close_ts", None)

    def keep(d: dict) -> bool:
        if statuses is not None and d["status"] not in statuses:
            return False
        if mve is not None and d["ticker"].startswith(MVE_PREFIX) != (mve == "only"):
            return False
        close_at = _instant(d.get("close_time"))
        return close_at is None or not (
            (min_close is not None and close_at < min_close * 1_000_000)
            or (max_close is not None and close_at > max_close * 1_000_000)
        )

    return keep


def _market_query(request: web.Request) -> tuple[str, list[Any]]:
    """The SQL conditions on ``markets`` (and their arguments) of ``tickers``, ``event_ticker``, ``series_ticker``."""
    where, args = "", list[Any]()
    if tickers := list_param(request, "tickers"):
        where, args = where + " AND ticker = ANY(%s)", [*args, tickers]
    if events := list_param(request, "event_ticker"):
        where, args = where + " AND event_ticker = ANY(%s)", [*args, events]
    if series := request.query.get("series_ticker"):
        where += " AND event_ticker IN (SELECT event_ticker FROM events WHERE series_ticker = %s)"
        args.append(series)
    return where, args


class ReplayRest:
    """Route handlers over production as of ``clock()``."""

    def __init__(self, conn: psycopg.Connection, feed: RecordedFeed, scope: Scope, clock: Callable[[], int]) -> None:
        self.conn = conn
        self.feed = feed
        self.scope = scope
        self.clock = clock

    def routes(self) -> list[web.RouteDef]:
        return market_data_routes(self)  # the same paths as the local exchange's

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Kalshi's error shapes for bad requests and unknown objects."""
        try:
            return await handler(request)
        except BadRequest as exc:
            return error_response(400, "bad_request", str(exc))
        except web.HTTPNotFound:
            if request.path.startswith(REST_PREFIX + "/"):
                return error_response(404, "not_found", "not found")
            raise

    # ----- as of the clock --------------------------------------------------------------------------------------
    def _as_of(self, rows: list[tuple[str, dict]]) -> list[dict]:
        """Market objects of ``(ticker, data)`` rows as of the clock (markets not yet created are left out)."""
        clock = self.clock()
        tickers = [t for t, _ in rows]
        quotes = {
            r[0]: r[1:]
            for r in self.conn.execute(
                "SELECT t.ticker, x.yes_bid, x.yes_ask, x.last_price, x.volume, x.open_interest, x.yes_bid_size, "
                "x.yes_ask_size FROM unnest(%s::text[]) AS t(ticker) CROSS JOIN LATERAL (SELECT * FROM tickers k "
                "WHERE k.ticker = t.ticker AND k.exchange_ts <= %s ORDER BY k.exchange_ts DESC LIMIT 1) x",
                (tickers, clock),
            ).fetchall()
        }
        statuses = {
            r[0]: r[1]
            for r in self.conn.execute(
                "SELECT t.ticker, x.event_type FROM unnest(%s::text[]) AS t(ticker) CROSS JOIN LATERAL (SELECT "
                "event_type FROM lifecycle_events l WHERE l.ticker = t.ticker AND l.exchange_ts <= %s AND "
                "l.event_type = ANY(%s) ORDER BY l.exchange_ts DESC LIMIT 1) x",
                (tickers, clock, list(STATUS_AFTER)),
            ).fetchall()
        }
        clock_s = clock // 1_000_000 * 1_000_000
        out = []
        for ticker, data in rows:
            created = _instant(data.get("created_time"))
            if created is not None and created > clock:
                continue
            d = dict(data)
            d["ticker"] = ticker
            quote = quotes.get(ticker)
            if quote is not None:
                for (_, key, unit), value in zip(_TICKER_FIELDS, quote, strict=True):
                    if value is not None:
                        d[key] = PRICE_STR[value] if unit == "price" else size_str(value)
                if quote[0] is not None:
                    d["no_ask_dollars"] = PRICE_STR[PRICE_MAX - quote[0]]
                if quote[1] is not None:
                    d["no_bid_dollars"] = PRICE_STR[PRICE_MAX - quote[1]]
            d["status"] = self._status(statuses.get(ticker), d, clock_s)
            if d["status"] not in ("determined", "finalized"):
                d["result"] = ""
                d.pop("settlement_value_dollars", None)
                d.pop("settlement_ts", None)
            out.append(d)
        return out

    @staticmethod
    def _status(event_type: str | None, d: dict, clock: int) -> str:
        status = STATUS_AFTER.get(event_type or "")
        open_at, close_at = _instant(d.get("open_time")), _instant(d.get("close_time"))
        if status in ("determined", "finalized", "inactive"):
            return status
        if close_at is not None and clock >= close_at:
            return "closed"
        if status is not None:
            return status
        if open_at is not None and clock < open_at:
            return "initialized"
        return "active" if open_at is not None else str(d.get("status") or "active")

    # ----- handlers ---------------------------------------------------------------------------------------------
    async def exchange_status(self, request: web.Request) -> web.Response:
        """``GET /exchange/status``."""
        return json_response({"exchange_active": True, "trading_active": True})

    def _rows(self, where: str, args: tuple, after: str, limit: int) -> list[tuple[str, dict]]:
        scope_sql, scope_args = self.scope.sql()
        return self.conn.execute(
            f"SELECT ticker, data FROM markets WHERE ticker > %s{where}{scope_sql} ORDER BY ticker LIMIT %s",
            (after, *args, *scope_args, limit),
        ).fetchall()

    async def market(self, request: web.Request) -> web.Response:
        """``GET /markets/{ticker}``."""
        ticker = request.match_info["ticker"]
        if not self.scope.allows(ticker):
            raise web.HTTPNotFound()
        row = self.conn.execute("SELECT ticker, data FROM markets WHERE ticker = %s", (ticker,)).fetchone()
        found = self._as_of([row]) if row else []
        if not found:
            raise web.HTTPNotFound()
        return json_response({"market": found[0]})

    async def markets(self, request: web.Request) -> web.Response:
        """``GET /markets``: limit/cursor/status/tickers/event_ticker/series_ticker/mve_filter/close-time filters."""
        limit = int_param(request, "limit", 100, 1, 1000)
        after = request.query.get("cursor") or ""
        keep = _market_filter(request)
        where, args = _market_query(request)
        out: list[dict] = []
        more = False
        while not more:
            rows = self._rows(where, tuple(args), after, PAGE)
            if not rows:
                break
            for d in filter(keep, self._as_of(rows)):
                if len(out) == limit:
                    more = True
                    break
                out.append(d)
            after = rows[-1][0]
        cursor = out[-1]["ticker"] if more else ""
        return json_response({"markets": out, "cursor": cursor})

    def _orderbook_fp(self, ticker: str, depth: int = 0) -> dict:
        book = self.feed.book(ticker)
        return {
            "yes_dollars": [[PRICE_STR[p], size_str(s)] for p, s in book.bids(True, depth)],
            "no_dollars": [[PRICE_STR[p], size_str(s)] for p, s in book.bids(False, depth)],
        }

    async def orderbook(self, request: web.Request) -> web.Response:
        """``GET /markets/{ticker}/orderbook?depth=N``: the replay's book at the clock."""
        ticker = request.match_info["ticker"]
        if not self.scope.allows(ticker):
            raise web.HTTPNotFound()
        depth = int_param(request, "depth", 0, 0, 100)
        return json_response({"orderbook_fp": self._orderbook_fp(ticker, depth)})

    async def orderbooks(self, request: web.Request) -> web.Response:
        """``GET /markets/orderbooks?tickers=A&tickers=B`` (1-100 repeated values, as Kalshi's OpenAPI and the sim)."""
        tickers = request.query.getall("tickers", [])
        if not 1 <= len(tickers) <= 100 or any(not t or len(t) > 200 for t in tickers):
            raise BadRequest("tickers: between 1 and 100 values of 1-200 characters required")
        known = {
            r[0] for r in self.conn.execute("SELECT ticker FROM markets WHERE ticker = ANY(%s)", (tickers,)).fetchall()
        }
        books = [
            {"ticker": t, "orderbook_fp": self._orderbook_fp(t)} for t in tickers if t in known and self.scope.allows(t)
        ]
        return json_response({"orderbooks": books})

    async def trades(self, request: web.Request) -> web.Response:
        """``GET /markets/trades`` newest first up to the clock: limit, cursor, ticker, min_ts/max_ts (seconds)."""
        limit = int_param(request, "limit", 100, 0, 1000) or 100
        where, args = "exchange_ts <= %s", list[Any]([self.clock()])
        if ticker := request.query.get("ticker"):
            where, args = where + " AND ticker = %s", [*args, ticker]
        shift = self.feed.shift_us  # message times are shifted (``--shift-to-now``): so are these filters
        if (lo := int_param(request, "min_ts", None)) is not None:
            where, args = where + " AND exchange_ts >= %s", [*args, lo * 1_000_000 - shift]
        if (hi := int_param(request, "max_ts", None)) is not None:
            where, args = where + " AND exchange_ts < %s", [*args, (hi + 1) * 1_000_000 - shift]
        if cursor := request.query.get("cursor"):
            ts, _, trade_id = cursor.partition("_")
            if not ts.isdigit() or not trade_id:
                raise BadRequest("invalid cursor")
            where, args = where + " AND (exchange_ts, trade_id::text) < (%s, %s)", [*args, int(ts), trade_id]
        scope_sql, scope_args = self.scope.sql()
        rows = self.conn.execute(
            "SELECT exchange_ts, trade_id::text, ticker, price, size, taker_side, is_block_trade FROM trades "
            f"WHERE {where}{scope_sql} ORDER BY exchange_ts DESC, trade_id::text DESC LIMIT %s",
            (*args, *scope_args, limit + 1),
        ).fetchall()
        page = rows[:limit]
        trades = []
        for ts, trade_id, t, price, size, taker_yes, block in page:
            taker = "yes" if taker_yes else "no"
            trades.append(
                {
                    "trade_id": trade_id,
                    "ticker": t,
                    "count_fp": size_str(size),
                    "yes_price_dollars": PRICE_STR[price],
                    "no_price_dollars": PRICE_STR[PRICE_MAX - price],
                    "taker_side": taker,
                    "taker_outcome_side": taker,
                    "taker_book_side": "bid" if taker_yes else "ask",
                    "created_time": iso(ts + shift),
                    "is_block_trade": bool(block),
                }
            )
        nxt = f"{page[-1][0]}_{page[-1][1]}" if len(rows) > limit else ""
        return json_response({"trades": trades, "cursor": nxt})

    async def event(self, request: web.Request) -> web.Response:
        """``GET /events/{event_ticker}``: ``{event, markets}`` (markets as of the clock)."""
        event_ticker = request.match_info["event_ticker"]
        row = self.conn.execute("SELECT data FROM events WHERE event_ticker = %s", (event_ticker,)).fetchone()
        if row is None:
            raise web.HTTPNotFound()
        rows = self.conn.execute(
            "SELECT ticker, data FROM markets WHERE event_ticker = %s ORDER BY ticker", (event_ticker,)
        ).fetchall()
        markets = self._as_of([r for r in rows if self.scope.allows(r[0])])
        event = dict(row[0])
        if request.query.get("with_nested_markets", "false").lower() == "true":
            event["markets"] = markets
        return json_response({"event": event, "markets": markets})

    async def events(self, request: web.Request) -> web.Response:
        """``GET /events``: limit (<= 200), cursor, series_ticker, with_nested_markets (markets as of the clock)."""
        limit = int_param(request, "limit", 200, 1, 200)
        after = request.query.get("cursor") or ""
        where, args = "event_ticker > %s", [after]
        if series := request.query.get("series_ticker"):
            where, args = where + " AND series_ticker = %s", [*args, series]
        rows = self.conn.execute(
            f"SELECT event_ticker, data FROM events WHERE {where} ORDER BY event_ticker LIMIT %s", (*args, limit + 1)
        ).fetchall()
        nested = request.query.get("with_nested_markets", "false").lower() == "true"
        out = []
        for event_ticker, data in rows[:limit]:
            event = dict(data)
            if nested:
                markets = self.conn.execute(
                    "SELECT ticker, data FROM markets WHERE event_ticker = %s ORDER BY ticker", (event_ticker,)
                ).fetchall()
                event["markets"] = self._as_of([r for r in markets if self.scope.allows(r[0])])
            out.append(event)
        return json_response({"events": out, "cursor": rows[limit - 1][0] if len(rows) > limit else ""})

    async def series_list(self, request: web.Request) -> web.Response:
        """``GET /series`` (every series; ``category`` filter)."""
        rows = self.conn.execute("SELECT data FROM series ORDER BY ticker").fetchall()
        category = request.query.get("category")
        out = [r[0] for r in rows if not category or r[0].get("category") == category]
        return json_response({"series": out})

    async def series(self, request: web.Request) -> web.Response:
        """``GET /series/{ticker}``."""
        row = self.conn.execute("SELECT data FROM series WHERE ticker = %s", (request.match_info["ticker"],)).fetchone()
        if row is None:
            raise web.HTTPNotFound()
        return json_response({"series": row[0]})
