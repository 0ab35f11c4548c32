"""WebSocket connections as sockets with callbacks (the way cryptofeed's ``ConnectionHandler`` takes its handler).

A :class:`WsConnection` knows nothing about markets, subscriptions or sequence numbers. It connects, reconnects with
jittered exponential backoff, answers the server's pings, pings when idle, closes a socket that has shown no frame
for ``ping_timeout_s`` (idle markets are normal, so liveness never depends on data) and paces its commands through a
token bucket (:class:`CommandBucket`). What the frames mean is the business of its three callbacks:
``on_open(conn)`` after each connect, ``on_frame(conn, raw, rx_us)`` per text frame and ``on_close(conn)`` after each
disconnect. :class:`ConnectionPool` opens the layout of docs/gatherer.md "Sharding = subscriptions": global-channel
connections plus order-book connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson

from kalshictl.backoff import WALL, Backoff, Jitter
from kalshictl.units import now_us

if TYPE_CHECKING:
    import aiohttp

    from kalshictl.config import WebSocketSettings

log = logging.getLogger("kalshictl.gatherer.connections")

OnOpen = Callable[["WsConnection"], None]
OnFrame = Callable[["WsConnection", "str | bytes", int], None]
OnClose = Callable[["WsConnection"], None]


class CommandBucket:
    """A token bucket: ``burst`` commands at once, then ``per_minute`` a minute; commands leave in order."""

    def __init__(self, per_minute: float, burst: int) -> None:
        self.rate = per_minute / 60.0
        self.capacity = float(max(1, burst))
        self.tokens = self.capacity
        self._t = time.monotonic()
        self._lock = asyncio.Lock()
        self._sent: deque[float] = deque()
        self.sent = 0
        self.waited_s = 0.0

    def _refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + (now - self._t) * self.rate)
        self._t = now

    async def take(self) -> None:
        """Wait for a token (FIFO)."""
        async with self._lock:
            now = time.monotonic()
            self._refill(now)
            if self.tokens < 1.0:
                wait = (1.0 - self.tokens) / self.rate
                self.waited_s += wait
                await asyncio.sleep(wait)
                now = time.monotonic()
                self._refill(now)
            self.tokens -= 1.0
            self.sent += 1
            self._sent.append(now)

    def last_minute(self) -> int:
        """Commands sent in the last 60 seconds."""
        cutoff = time.monotonic() - 60.0
        q = self._sent
        while q and q[0] < cutoff:
            q.popleft()
        return len(q)


class WsConnection:
    """One self-healing WebSocket; frames and state changes go to its callbacks."""

    def __init__(
        self,
        pool: ConnectionPool,
        index: int,
        kind: str,
        *,
        on_open: OnOpen,
        on_frame: OnFrame,
        on_close: OnClose,
    ) -> None:
        self.pool = pool
        self.index = index
        self.kind = kind  # "global" | "orderbook"
        self.name = f"{'ob' if kind == 'orderbook' else 'g'}-{index:03d}"
        self.on_open = on_open
        self.on_frame = on_frame
        self.on_close = on_close
        s = pool.settings
        self.bucket = CommandBucket(s.commands_per_minute, s.command_burst)
        self.pending: dict[int, Any] = {}  # command id -> what the caller tagged it with (cleared on disconnect)
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.connected = False
        self.generation = 0  # bumped per connect: a command queued for an older socket is dropped
        self.last_rx = time.monotonic()
        self.reconnects = 0
        self.frames = 0
        self.connected_since: float | None = None
        self.last_error: str | None = None
        self._ids = itertools.count(1)
        self._task: asyncio.Task[None] | None = None
        self._force_close = False

    def __repr__(self) -> str:
        return f"WsConnection({self.name})"

    @property
    def alive(self) -> bool:
        """Connected and frames (pings count) seen within the ping timeout."""
        return self.connected and time.monotonic() - self.last_rx <= self.pool.settings.ping_timeout_s

    def status(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "connected": self.connected,
            "reconnects": self.reconnects,
            "frames": self.frames,
            "idle_s": round(time.monotonic() - self.last_rx, 3),
            "commands": {
                "sent": self.bucket.sent,
                "last_minute": self.bucket.last_minute(),
                "tokens": round(self.bucket.tokens, 1),
                "pending": len(self.pending),
            },
            "last_error": self.last_error,
        }

    # ----- commands -------------------------------------------------------------------------------------------
    async def send(self, cmd: str, params: dict[str, Any], tag: Any = None) -> int | None:
        """Send one command through the token bucket; ``tag`` is kept in :attr:`pending` under its id until the
        caller pops it. Returns the id, or None when the socket went down meanwhile (the reconnect's
        ``on_open`` resends what is needed)."""
        gen = self.generation
        await self.bucket.take()
        ws = self.ws
        if ws is None or ws.closed or not self.connected or gen != self.generation:
            return None
        cmd_id = next(self._ids)
        self.pending[cmd_id] = tag if tag is not None else cmd
        self.pool.metrics.commands.labels(cmd=cmd).inc()
        try:
            await ws.send_str(orjson.dumps({"id": cmd_id, "cmd": cmd, "params": params}).decode())
        except (ConnectionError, RuntimeError) as exc:
            self.pending.pop(cmd_id, None)
            log.info("%s: send failed: %s", self.name, exc)
            return None
        return cmd_id

    def reconnect_now(self, reason: str) -> None:
        """Close the socket so the run loop reconnects (and ``on_open`` resubscribes)."""
        log.warning("%s: reconnecting (%s)", self.name, reason)
        self._force_close = True
        if self.ws is not None and not self.ws.closed:
            self.pool.spawn(self.ws.close())

    # ----- the loop -------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"ws-{self.name}")

    async def _run(self) -> None:
        import aiohttp

        pool = self.pool
        s = pool.settings
        backoff = Backoff(s.reconnect_min_s, s.reconnect_max_s, Jitter.FULL)
        delays = backoff.delays()
        while not pool.stopping:
            stable = False
            try:
                if pool.session is None:
                    raise RuntimeError("the connection pool is not started")
                ws = await pool.session.ws_connect(
                    pool.ws_url, headers=pool.auth_headers(), autoping=False, max_msg_size=64 * 1024 * 1024
                )
                self.ws = ws
                self.connected = True
                self.generation += 1
                self.connected_since = time.monotonic()
                self.last_rx = time.monotonic()
                self.last_error = None
                self.on_open(self)
                watchdog = asyncio.create_task(self._watchdog())
                try:
                    stable = await self._read(ws)
                finally:
                    watchdog.cancel()
            except asyncio.CancelledError:
                raise
            except aiohttp.WSServerHandshakeError as exc:
                self.last_error = f"HTTP {exc.status}"
                if exc.status in (401, 403):
                    log.error(
                        "%s: the exchange refused the API key (HTTP %d): check exchange.api_key_id and "
                        "exchange.private_key",
                        self.name,
                        exc.status,
                    )
                else:
                    log.info("%s: upgrade refused: HTTP %d", self.name, exc.status)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                self.last_error = str(exc) or type(exc).__name__
                log.info("%s: connection failed: %s", self.name, self.last_error)
            except Exception:
                log.exception("%s: unexpected error", self.name)
            finally:
                self._closed()
            if pool.stopping:
                break
            if stable:
                delays = backoff.delays()
            self.reconnects += 1
            await WALL(next(delays), pool.stop_event)  # wall time: a scaled clock never speeds up reconnects

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> bool:
        from aiohttp import WSMsgType

        pool = self.pool
        on_frame = self.on_frame
        self._force_close = False
        while True:
            msg = await ws.receive()
            if pool.stopping_rx:
                break
            self.last_rx = time.monotonic()
            match msg.type:
                case WSMsgType.TEXT | WSMsgType.BINARY:
                    self.frames += 1
                    on_frame(self, msg.data, now_us())
                case WSMsgType.PING:
                    await ws.pong(msg.data)
                case WSMsgType.PONG:
                    pass
                case _:  # CLOSE, CLOSING, CLOSED, ERROR
                    break
        stable = self.connected_since is not None and time.monotonic() - self.connected_since > 30
        return stable and not self._force_close

    async def _watchdog(self) -> None:
        timeout = self.pool.settings.ping_timeout_s
        while True:
            await asyncio.sleep(max(0.05, timeout / 4))
            idle = time.monotonic() - self.last_rx
            ws = self.ws
            if ws is None or ws.closed:
                return
            if idle > timeout:
                log.warning("%s: no frame for %.1fs: closing dead socket", self.name, idle)
                await ws.close()
                return
            if idle > timeout / 3:
                with contextlib.suppress(Exception):
                    await ws.ping(b"kalshictl")

    def _closed(self) -> None:
        was = self.connected
        self.connected = False
        self.generation += 1
        ws, self.ws = self.ws, None
        if ws is not None and not ws.closed:
            self.pool.spawn(ws.close())
        self.pending.clear()
        if was and not self.pool.stopping:
            self.pool.metrics.reconnects.inc()
            self.on_close(self)


class ConnectionPool:
    """The connection layout (docs/gatherer.md "Sharding = subscriptions"): ``global_connections`` +
    ``orderbook_connections`` sockets, one HTTP session."""

    def __init__(
        self,
        settings: WebSocketSettings,
        ws_url: str,
        metrics: Any,
        *,
        on_open: OnOpen,
        on_frame: OnFrame,
        on_close: OnClose,
        is_healthy: Callable[[WsConnection], bool] | None = None,
        key_id: str | None = None,
        private_key: Any = None,
    ) -> None:
        self.settings = settings
        self.ws_url = ws_url
        self.metrics = metrics
        self.key_id = key_id
        self.private_key = private_key
        self.session: aiohttp.ClientSession | None = None
        self.stopping = False
        self.stopping_rx = False
        self.stop_event = asyncio.Event()
        self.background: set[asyncio.Future[Any]] = set()

        def conns(kind: str, n: int) -> list[WsConnection]:
            return [
                WsConnection(self, i, kind, on_open=on_open, on_frame=on_frame, on_close=on_close) for i in range(n)
            ]

        self.global_conns = conns("global", settings.global_connections)
        self.book_conns = conns("orderbook", settings.orderbook_connections)
        # healthy = alive, unless the frame handler knows more (the router: every subscription acknowledged)
        self.is_healthy: Callable[[WsConnection], bool] = is_healthy or (lambda c: c.alive)

    @property
    def connections(self) -> list[WsConnection]:
        return [*self.global_conns, *self.book_conns]

    @property
    def target(self) -> int:
        return len(self.global_conns) + len(self.book_conns)

    def healthy_count(self) -> int:
        return sum(1 for c in self.connections if self.is_healthy(c))

    def connected_count(self) -> int:
        return sum(1 for c in self.connections if c.connected)

    def spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    def auth_headers(self) -> dict[str, str]:
        if not self.key_id or self.private_key is None:
            return {}
        from kalshictl.kalshi.auth import sign_headers

        return sign_headers(self.key_id, self.private_key, "GET", urlsplit(self.ws_url).path)

    async def start(self) -> None:
        """Open every connection."""
        import aiohttp

        # aiohttp caps a session at 100 connections by default: production runs 150 (6 global + 144 order book)
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, limit_per_host=0))
        for conn in self.connections:
            conn.start()

    async def wait_healthy(self, timeout: float) -> bool:
        """Wait until every connection is healthy (subscriptions acknowledged)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.healthy_count() == self.target:
                return True
            await asyncio.sleep(0.05)
        return False

    def stop_receiving(self) -> None:
        """Shutdown step 1: stop handling frames and stop reconnecting."""
        self.stopping = True
        self.stopping_rx = True
        self.stop_event.set()

    async def close(self) -> None:
        """Shutdown step 3: close every socket and the HTTP session."""
        self.stopping = True
        self.stop_event.set()
        for conn in self.connections:
            if conn.ws is not None and not conn.ws.closed:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.ws.close(), 2)
        tasks = [c._task for c in self.connections if c._task is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        for job in list(self.background):
            job.cancel()
        if self.session is not None:
            await self.session.close()
