"""The replay server: the recorded world behind the local exchange's Kalshi protocol layer (docs/replay.md).

``ReplayServer`` implements ``kalshictl.sim.world.World``: the WebSocket at ``/trade-api/ws/v2`` is served by
``kalshictl.sim.ws.handle_ws`` unchanged (commands, acks, errors, sids, seqs, heartbeat pings, per-connection bounded
queue with the slow-consumer disconnect). One replay clock serves every client: it starts at ``--from`` and begins to
run once ``wait_clients`` connections have subscribed, so each client's first snapshot is the book at ``--from``.
When the period ends every connection is closed (code 1000) after its queue drains.

Besides Kalshi's paths: ``GET /replay/gaps`` (windows no gatherer recorded), ``GET /replay/status`` (clock, events,
clients), ``POST /replay/start`` (start the clock now) and ``GET /replay?from=&to=&channels=&tickers=`` (NDJSON
``{"ts": µs, "message": {…}}``, an independent replay of its own window at full speed; see :func:`ndjson`).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from kalshictl.replay.rest import ReplayRest
from kalshictl.replay.session import RecordedFeed, Session
from kalshictl.replay.source import (
    DELTA,
    LIFECYCLE,
    READS,
    TICKER,
    TRADE,
    Scope,
    cold_plan,
    events,
    gap_ends,
    gap_windows,
)
from kalshictl.research.times import iso
from kalshictl.sim.config import REST_PREFIX, WS_PATH, SimConfig
from kalshictl.sim.connection import Connections
from kalshictl.sim.faults import FaultInjector
from kalshictl.sim.kalshi_http import error_response
from kalshictl.sim.stats import Stats
from kalshictl.sim.subscriptions import LIFECYCLE as LIFECYCLE_CHANNEL
from kalshictl.sim.subscriptions import MVE_LIFECYCLE, ORDERBOOK, Sub
from kalshictl.sim.ws import handle_ws

if TYPE_CHECKING:
    import psycopg

    from kalshictl.config import DatabaseSettings, Settings
    from kalshictl.research.cold import ColdStore

DEFAULT_BUFFER = 64 * 1024 * 1024  # bytes queued per connection before the slow-consumer disconnect
NDJSON_CHANNELS = (ORDERBOOK, "trade", "ticker", LIFECYCLE_CHANNEL, MVE_LIFECYCLE)
_KINDS = {ORDERBOOK: DELTA, "trade": TRADE, "ticker": TICKER, LIFECYCLE_CHANNEL: LIFECYCLE, MVE_LIFECYCLE: LIFECYCLE}


@dataclass
class ReplayOptions:
    """What to replay and how: times in µs since the epoch; ``speed`` None = as fast as clients read."""

    from_us: int
    to_us: int
    speed: float | None = None
    tickers: list[str] = field(default_factory=list)
    series: list[str] = field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = 8770
    wait_clients: int = 1
    buffer_bytes: int = DEFAULT_BUFFER
    heartbeat_s: float = 10.0
    shift_to_now: bool = False  # message times moved so that from_us is the moment the clock starts


class _Cold:
    """The cold tier for one replay (docs/replay.md, "Across tiers"): a store for the event stream when a day of the
    period left production (read in a worker thread) and a reader for books when any order-book day did (read on the
    event loop), each with its own store so neither shares a connection."""

    def __init__(self, conn: psycopg.Connection, settings: Settings | None, from_us: int, to_us: int) -> None:
        from kalshictl.research.cold import BOOK_TABLES, ColdReader, configured_store

        plan = cold_plan(conn, from_us, to_us, READS)
        self.stream: ColdStore | None = configured_store(conn, settings, [READS[k].table for k in plan])
        book_store = configured_store(conn, settings, BOOK_TABLES)
        self.books = ColdReader(conn, book_store) if book_store is not None else None

    def close(self) -> None:
        from kalshictl.research.cold import close_store

        close_store(self.stream)
        close_store(self.books.store if self.books is not None else None)


def _open(db: DatabaseSettings, autocommit: bool) -> psycopg.Connection:
    from kalshictl.db.connect import connect

    conn = connect(db, autocommit=autocommit)
    conn.execute("SET default_transaction_read_only = on")  # replay only ever reads production
    if not autocommit:
        conn.commit()
    return conn


class ReplayServer:
    """``async with ReplayServer(db, ReplayOptions(...)) as rs: rs.ws_url, rs.rest_url, await rs.done()``."""

    def __init__(self, db: DatabaseSettings, opts: ReplayOptions, *, settings: Settings | None = None) -> None:
        self.db = db
        self.opts = opts
        self.settings = settings  # the --config file: its exporter section names the cold tier
        self.cold: _Cold | None = None
        self.cfg = SimConfig(
            host=opts.host, port=opts.port, ws_buffer_bytes=opts.buffer_bytes, heartbeat_s=opts.heartbeat_s
        )
        self.faults = FaultInjector("", 0)  # a recorded world injects nothing
        self.counters = Stats()
        self.connections = Connections()
        self.public_key = None  # recorded public data: signed headers are accepted, never required
        self._subscribed: set[int] = set()
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task] = []
        self._port = 0

    # ----- World ------------------------------------------------------------------------------------------------
    def market_key(self, ticker: str) -> str | None:
        """Markets production knows (its ``markets`` metadata or any recorded book) inside the replay's scope."""
        if not self.scope.allows(ticker):
            return None
        if ticker in self.known:
            return ticker
        row = self.point.execute("SELECT 1 FROM orderbook_snapshots WHERE ticker = %s LIMIT 1", (ticker,)).fetchone()
        if row is not None:
            self.known.add(ticker)
            return ticker
        return None

    def check_auth(self, request: web.Request, method: str, path: str) -> str | None:
        return None

    def _on_subscribe(self, sub: Sub) -> None:
        self._subscribed.add(sub.conn.cid)
        if self.opts.wait_clients and len(self._subscribed) >= self.opts.wait_clients:
            self.session.started.set()

    # ----- lifecycle --------------------------------------------------------------------------------------------
    async def start(self) -> ReplayServer:
        """Open production (read-only) and the cold tier, plan the replay, bind and serve."""
        try:
            return await self._start_serving()
        except BaseException:
            await self.stop()
            raise

    async def _start_serving(self) -> ReplayServer:
        from kalshictl.replay.source import resolve_scope

        o = self.opts
        self.point = _open(self.db, autocommit=True)
        self.stream = _open(self.db, autocommit=False)
        self.cold = _Cold(self.point, self.settings, o.from_us, o.to_us)
        self.scope: Scope = resolve_scope(self.point, o.tickers, o.series)
        self.gaps = gap_windows(self.point, o.from_us, o.to_us)
        scope_sql, scope_args = self.scope.sql()
        self.known = {r[0] for r in self.point.execute(f"SELECT ticker FROM markets WHERE true{scope_sql}", scope_args)}
        self.feed = RecordedFeed(self.point, o.from_us, self._on_subscribe, self.cold.books)
        extra = gap_ends(self.gaps, self.scope)
        source = events(self.stream, o.from_us, o.to_us, self.scope, extra=extra, store=self.cold.stream)
        conns = self.connections.all
        self.session = Session(self.feed, source, o.from_us, o.to_us, o.speed, conns, shift_to_now=o.shift_to_now)
        self.rest = ReplayRest(self.point, self.feed, self.scope, lambda: self.session.clock_us)
        app = web.Application(middlewares=[self.rest.middleware])
        app.add_routes(self.rest.routes())
        app.router.add_get(WS_PATH, self._ws)
        app.router.add_get("/replay/gaps", self._gaps)
        app.router.add_get("/replay/status", self._status)
        app.router.add_post("/replay/start", self._start)
        app.router.add_get("/replay", self._ndjson)
        app.on_shutdown.append(self._on_shutdown)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET6 if ":" in o.host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((o.host, o.port))
        self._port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock, backlog=1024).start()
        self._tasks = [asyncio.create_task(self._run())]
        return self

    async def _run(self) -> None:
        try:
            await self.session.run()
        finally:
            self.connections.finish_all()  # the period is over: drain, then close (code 1000)

    async def done(self) -> None:
        """Wait until the whole period has been sent."""
        await self.session.finished.wait()

    async def stop(self) -> None:
        """Stop serving and close production and the cold tier (again: nothing)."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        cold, self.cold = self.cold, None
        if cold is not None:
            cold.close()
        for conn in (getattr(self, "stream", None), getattr(self, "point", None)):
            if conn is not None:
                conn.close()

    async def _on_shutdown(self, app: web.Application) -> None:
        await self.connections.shutdown()

    async def __aenter__(self) -> ReplayServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def base_url(self) -> str:
        host = f"[{self.opts.host}]" if ":" in self.opts.host else self.opts.host
        return f"http://{host}:{self._port}"

    @property
    def rest_url(self) -> str:
        return self.base_url + REST_PREFIX

    @property
    def ws_url(self) -> str:
        return "ws" + self.base_url[4:] + WS_PATH

    # ----- handlers ---------------------------------------------------------------------------------------------
    async def _ws(self, request: web.Request) -> web.StreamResponse:
        return await handle_ws(self, request)

    async def _gaps(self, request: web.Request) -> web.Response:
        """``GET /replay/gaps``: windows no gatherer recorded (``kalshictl coverage``'s production gaps)."""
        return web.json_response({"from": iso(self.opts.from_us), "to": iso(self.opts.to_us), "gaps": self.gaps})

    async def _start(self, request: web.Request) -> web.Response:
        """``POST /replay/start``: start the clock now (with ``--wait-clients 0`` nothing else starts it)."""
        self.session.started.set()
        return await self._status(request)

    async def _status(self, request: web.Request) -> web.Response:
        s = self.session
        return web.json_response(
            {
                "from": self.opts.from_us,
                "to": self.opts.to_us,
                "clock": s.clock_us,
                "clock_time": iso(s.clock_us),
                "speed": self.opts.speed or "max",
                "started": s.started.is_set(),
                "finished": s.finished.is_set(),
                "events": s.events,
                "frames": self.feed.sent,
                "clients": len(self.connections),
                "slow_consumer_disconnects": self.counters.buffer_overflows,
                "shift_us": self.feed.shift_us,
            }
        )

    async def _ndjson(self, request: web.Request) -> web.StreamResponse:
        from kalshictl.errors import ConfigError
        from kalshictl.research.times import parse_instant

        q = request.query
        try:
            from_us = parse_instant(q["from"], what="from") if q.get("from") else self.opts.from_us
            to_us = parse_instant(q["to"], what="to") if q.get("to") else self.opts.to_us
        except ConfigError as exc:
            return error_response(400, "bad_request", str(exc))
        channels = [c for raw in q.getall("channels", []) for c in raw.split(",") if c] or list(NDJSON_CHANNELS)
        tickers = [t for raw in q.getall("tickers", []) for t in raw.split(",") if t]
        bad = [c for c in channels if c not in NDJSON_CHANNELS]
        if bad or from_us > to_us:
            why = f"unknown channel(s) {bad}; expected {list(NDJSON_CHANNELS)}" if bad else "from is after to"
            return error_response(400, "bad_request", why)
        if ORDERBOOK in channels and not tickers:
            return error_response(400, "bad_request", "orderbook_delta needs tickers (as a WebSocket subscribe does)")
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        await ndjson(self.db, from_us, to_us, channels, tickers, self.scope, resp.write, settings=self.settings)
        await resp.write_eof()
        return resp


class _Sink:
    """A connection-shaped collector of frames for the NDJSON stream (``Connection``'s send side)."""

    def __init__(self, cid: int) -> None:
        self.cid = cid
        self.closed = False
        self.queued_bytes = 0
        self.frames: list[bytes] = []

    def send(self, frame: bytes) -> None:
        self.frames.append(frame)

    def abort(self) -> None:
        self.closed = True


async def ndjson(
    db: DatabaseSettings,
    from_us: int,
    to_us: int,
    channels: Iterable[str],
    tickers: list[str],
    server_scope: Scope,
    write: Any,
    *,
    settings: Settings | None = None,
) -> int:
    """Replay ``[from_us, to_us]`` of ``channels`` (market ``tickers``; empty = all) as NDJSON lines through ``write``.

    The messages are those a WebSocket client would receive after one ``subscribe`` of every channel (sids 1..n in
    ``channels`` order), starting with an ``orderbook_snapshot`` per market at ``from``. Returns lines written.
    """
    channels = list(dict.fromkeys(channels))
    scope = server_scope
    if tickers:
        allowed = [t for t in tickers if server_scope.allows(t)]
        scope = Scope(frozenset(allowed), server_scope.events)
    point, stream = _open(db, autocommit=True), _open(db, autocommit=False)
    sink = _Sink(0)
    lines = 0
    cold: _Cold | None = None
    try:
        cold = _Cold(point, settings, from_us, to_us)
        feed = RecordedFeed(point, from_us, cold=cold.books)
        windows = gap_windows(point, from_us, to_us) if ORDERBOOK in channels else []
        kinds = {_KINDS[c] for c in channels}
        source = events(stream, from_us, to_us, scope, kinds, extra=gap_ends(windows, scope), store=cold.stream)
        session = Session(feed, source, from_us, to_us, None, lambda: [])
        for sid, channel in enumerate(channels, start=1):
            per_market = channel in (ORDERBOOK, "trade", "ticker") and bool(tickers)
            sub = Sub(sink, sid, channel, set() if per_market else None, False)
            feed.register(sub)
            if per_market:
                feed.add_tickers(sub, [t for t in tickers if scope.allows(t)])
            if channel == ORDERBOOK:
                for t in sorted(sub.tickers or ()):
                    feed.snapshot(sub, t)

        async def flush(ts: int) -> None:
            nonlocal lines
            if sink.frames:
                out = b"".join(b'{"ts":%d,"message":%b}\n' % (ts, f) for f in sink.frames)
                lines += len(sink.frames)
                sink.frames.clear()
                await write(out)

        await flush(from_us)
        session.started.set()
        await session.run(flush)
    finally:
        if cold is not None:
            cold.close()
        stream.close()
        point.close()
    return lines
