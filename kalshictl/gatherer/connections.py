"""The connection manager: global-channel connections plus order-book shards, each self-healing.

* Global connections subscribe ``ticker``, ``trade`` and ``market_lifecycle_v2`` round-robin (with more than three
  global connections a channel is carried twice; the writers' ``ON CONFLICT`` absorbs the copies and a disconnect of
  one copy loses nothing).
* Order-book connections each hold one ``orderbook_delta`` subscription (Kalshi merges repeated subscribes into one
  sid) of at most ``markets_per_subscription`` markets; new markets go to the least-loaded shard.
* Every connection reconnects with jittered exponential backoff, answers the server's pings, pings when idle, and a
  watchdog closes a socket that has shown no frame (data, ping or pong) for ``ping_timeout_s`` — idle markets are
  normal, so liveness never depends on data.
* A disconnect opens coverage gaps (per market on order-book shards, per channel on global connections); the
  resubscription's snapshots / acks close them (see :mod:`kalshictl.gatherer.sequence`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from kalshictl.gatherer.sequence import OpenGap, SeqTracker
from kalshictl.gatherer.writers import now_us

if TYPE_CHECKING:
    import aiohttp

    from kalshictl.config import WebSocketSettings
    from kalshictl.gatherer.router import Router

log = logging.getLogger("kalshictl.gatherer.connections")

GLOBAL_CHANNELS = ("ticker", "trade", "market_lifecycle_v2")
ORDERBOOK = "orderbook_delta"
CHUNK = 200  # tickers per subscribe / update command


class WsConnection:
    """One WebSocket connection and its subscriptions."""

    def __init__(self, manager: ConnectionManager, index: int, kind: str, channels: tuple[str, ...]) -> None:
        self.manager = manager
        self.index = index
        self.kind = kind  # "global" | "orderbook"
        self.channels = channels
        self.name = f"{kind}-{index}"
        self.markets: set[str] = set()
        self.sids: dict[str, int] = {}  # channel -> sid
        self.trackers: dict[int, SeqTracker] = {}
        self.pending: dict[int, tuple[str, list[str]]] = {}  # command id -> (purpose, tickers)
        self.global_gaps: dict[str, OpenGap] = {}
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.connected = False
        self.last_rx = time.monotonic()
        self.last_exchange_ts = 0
        self.last_in_sequence_rx = 0  # receive time (µs) of the last frame whose seq was in order
        self.reconnects = 0
        self.frames = 0
        self.connected_since: float | None = None
        self._ids = itertools.count(1)
        self._task: asyncio.Task | None = None
        self._force_close = False

    # ----- state ----------------------------------------------------------------------------------------------
    @property
    def healthy(self) -> bool:
        """Connected, every subscription acknowledged, and frames (pings count) seen recently."""
        if not self.connected:
            return False
        if time.monotonic() - self.last_rx > self.manager.settings.ping_timeout_s:
            return False
        if self.kind == "global":
            return all(ch in self.sids for ch in self.channels)
        return not self.markets or ORDERBOOK in self.sids

    def status(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "connected": self.connected,
            "healthy": self.healthy,
            "channels": list(self.channels),
            "markets": len(self.markets),
            "sids": dict(self.sids),
            "reconnects": self.reconnects,
            "frames": self.frames,
            "idle_s": round(time.monotonic() - self.last_rx, 3),
        }

    # ----- commands -------------------------------------------------------------------------------------------
    async def send(self, cmd: str, params: dict[str, Any], purpose: str = "", tickers: list[str] | None = None) -> None:
        """Send one command (dropped if the socket is down: resubscription on reconnect covers it)."""
        ws = self.ws
        if ws is None or ws.closed or not self.connected:
            return
        cmd_id = next(self._ids)
        self.pending[cmd_id] = (purpose or cmd, list(tickers or []))
        import orjson

        try:
            await ws.send_str(orjson.dumps({"id": cmd_id, "cmd": cmd, "params": params}).decode())
        except (ConnectionError, RuntimeError) as exc:
            log.info("%s: send failed: %s", self.name, exc)

    async def subscribe_markets(self, tickers: list[str]) -> None:
        """Add markets to this shard's orderbook subscription (subscribe merges into the existing sid)."""
        for i in range(0, len(tickers), CHUNK):
            chunk = tickers[i : i + CHUNK]
            params: dict[str, Any] = {"channels": [ORDERBOOK], "market_tickers": chunk}
            if self.manager.settings.use_yes_price:
                params["use_yes_price"] = True
            await self.send("subscribe", params, "subscribe", chunk)

    async def request_snapshots(self, tickers: list[str]) -> None:
        """Ask for fresh snapshots of exactly these markets (``get_snapshot``)."""
        sid = self.sids.get(ORDERBOOK)
        if sid is None:
            return  # the pending (re)subscription delivers snapshots anyway
        for i in range(0, len(tickers), CHUNK):
            chunk = tickers[i : i + CHUNK]
            params = {"sids": [sid], "action": "get_snapshot", "market_tickers": chunk}
            await self.send("update_subscription", params, "get_snapshot", chunk)

    async def probe_seq(self) -> None:
        """Ask for the order-book sid's current seq: re-adding a market already in the subscription is a no-op whose
        ``ok`` ack carries the sid's last seq, ordered after the data on the socket (see Router._ack_seq)."""
        sid = self.sids.get(ORDERBOOK)
        if sid is None or not self.markets:
            return
        ticker = next(iter(self.markets))
        params = {"sids": [sid], "action": "add_markets", "market_tickers": [ticker]}
        await self.send("update_subscription", params, "seq_probe", [ticker])

    async def unsubscribe_markets(self, tickers: list[str]) -> None:
        """Remove markets from this shard's subscription."""
        sid = self.sids.get(ORDERBOOK)
        if sid is None:
            return
        params = {"sids": [sid], "action": "delete_markets", "market_tickers": tickers}
        await self.send("update_subscription", params, "delete_markets", tickers)

    async def _subscribe_all(self) -> None:
        if self.kind == "global":
            await self.send("subscribe", {"channels": list(self.channels)}, "subscribe_global")
        elif self.markets:
            await self.subscribe_markets(sorted(self.markets))

    def reconnect_now(self, reason: str) -> None:
        """Close the socket so the run loop reconnects and resubscribes."""
        log.warning("%s: reconnecting (%s)", self.name, reason)
        self._force_close = True
        if self.ws is not None and not self.ws.closed:
            task = asyncio.ensure_future(self.ws.close())
            self.manager.background.add(task)
            task.add_done_callback(self.manager.background.discard)

    # ----- the loop -------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"ws-{self.name}")

    async def _run(self) -> None:
        import aiohttp

        mgr = self.manager
        s = mgr.settings
        backoff = s.reconnect_min_s
        while not mgr.stopping:
            stable = False
            try:
                headers = mgr.auth_headers()
                ws = await mgr.session.ws_connect(
                    mgr.ws_url, headers=headers, autoping=False, max_msg_size=64 * 1024 * 1024
                )
                self.ws = ws
                self.connected = True
                self.connected_since = time.monotonic()
                self.last_rx = time.monotonic()
                await self._subscribe_all()
                watchdog = asyncio.create_task(self._watchdog())
                try:
                    stable = await self._read(ws)
                finally:
                    watchdog.cancel()
            except asyncio.CancelledError:
                raise
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                log.info("%s: connection failed: %s", self.name, exc or type(exc).__name__)
            except Exception:
                log.exception("%s: unexpected error", self.name)
            finally:
                self._on_disconnect()
            if mgr.stopping:
                break
            if stable:
                backoff = s.reconnect_min_s
            delay = random.uniform(0, backoff) + s.reconnect_min_s * 0.1  # full jitter
            backoff = min(s.reconnect_max_s, backoff * 2)
            self.reconnects += 1
            mgr.on_reconnect(self)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(mgr.stop_event.wait(), delay)

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> bool:
        from aiohttp import WSMsgType

        router = self.manager.router
        self._force_close = False
        while True:
            msg = await ws.receive()
            if self.manager.stopping_rx:
                break
            self.last_rx = time.monotonic()
            t = msg.type
            if t == WSMsgType.TEXT:
                self.frames += 1
                router.handle(self, msg.data, now_us())
            elif t == WSMsgType.PING:
                await ws.pong(msg.data)
            elif t == WSMsgType.PONG:
                pass
            elif t == WSMsgType.BINARY:
                router.handle(self, msg.data, now_us())
            else:  # CLOSE, CLOSING, CLOSED, ERROR
                break
        stable = self.connected_since is not None and time.monotonic() - self.connected_since > 30
        return stable and not self._force_close

    async def _watchdog(self) -> None:
        timeout = self.manager.settings.ping_timeout_s
        while True:
            await asyncio.sleep(max(0.05, timeout / 4))
            idle = time.monotonic() - self.last_rx
            ws = self.ws
            if ws is None or ws.closed:
                return
            if idle > timeout:
                log.warning("%s: no frame for %.1fs: closing dead socket", self.name, idle)
                self.manager.metrics.gaps.labels(reason="watchdog").inc()
                await ws.close()
                return
            if idle > timeout / 3:
                with contextlib.suppress(Exception):
                    await ws.ping(b"kalshictl")

    def _on_disconnect(self) -> None:
        was = self.connected
        self.connected = False
        ws, self.ws = self.ws, None
        if ws is not None and not ws.closed:
            task = asyncio.ensure_future(ws.close())
            self.manager.background.add(task)
            task.add_done_callback(self.manager.background.discard)
        self.pending.clear()
        self.trackers.clear()
        old = dict(self.sids)
        self.sids.clear()
        if was and not self.manager.stopping:
            self.manager.on_disconnect(self, old)


class ConnectionManager:
    """Owns every connection; shards markets over the order-book connections."""

    def __init__(
        self,
        settings: WebSocketSettings,
        ws_url: str,
        router: Router,
        metrics: Any,
        *,
        key_id: str | None = None,
        private_key: Any = None,
    ) -> None:
        self.settings = settings
        self.ws_url = ws_url
        self.router = router
        self.metrics = metrics
        self.key_id = key_id
        self.private_key = private_key
        self.session: aiohttp.ClientSession = None  # type: ignore[assignment]
        self.stopping = False
        self.stopping_rx = False
        self.stop_event = asyncio.Event()
        self.background: set[asyncio.Future] = set()
        self.global_conns = [
            WsConnection(self, i, "global", (GLOBAL_CHANNELS[i % len(GLOBAL_CHANNELS)],))
            for i in range(settings.global_connections)
        ]
        if settings.global_connections < len(GLOBAL_CHANNELS):  # fewer connections than channels: share
            for i, ch in enumerate(GLOBAL_CHANNELS[settings.global_connections :]):
                conn = self.global_conns[i % settings.global_connections]
                conn.channels = (*conn.channels, ch)
        self.book_conns = [
            WsConnection(self, i, "orderbook", (ORDERBOOK,)) for i in range(settings.orderbook_connections)
        ]
        self.shard_of: dict[str, WsConnection] = {}
        self.unplaced: set[str] = set()
        self.on_disconnect_cb: Callable[[WsConnection, dict[str, int]], None] | None = None

    @property
    def connections(self) -> list[WsConnection]:
        return [*self.global_conns, *self.book_conns]

    @property
    def target(self) -> int:
        return len(self.global_conns) + len(self.book_conns)

    def healthy_count(self) -> int:
        return sum(1 for c in self.connections if c.healthy)

    def connected_count(self) -> int:
        return sum(1 for c in self.connections if c.connected)

    def auth_headers(self) -> dict[str, str]:
        if not self.key_id or self.private_key is None:
            return {}
        from kalshictl.kalshi.auth import sign_headers

        return sign_headers(self.key_id, self.private_key, "GET", urlsplit(self.ws_url).path)

    # ----- sharding -------------------------------------------------------------------------------------------
    def _place(self, ticker: str) -> WsConnection | None:
        cap = self.settings.markets_per_subscription
        best = min(self.book_conns, key=lambda c: len(c.markets), default=None)
        if best is None or len(best.markets) >= cap:
            return None
        best.markets.add(ticker)
        self.shard_of[ticker] = best
        return best

    def assign(self, tickers: list[str]) -> dict[WsConnection, list[str]]:
        """Place markets on shards (balanced, within the cap); returns the new placements per connection."""
        placed: dict[WsConnection, list[str]] = {}
        for t in tickers:
            if t in self.shard_of:
                continue
            conn = self._place(t)
            if conn is None:
                self.unplaced.add(t)
                continue
            placed.setdefault(conn, []).append(t)
        if self.unplaced:
            log.error(
                "%d markets exceed the order-book capacity (%d connections x %d markets)",
                len(self.unplaced),
                len(self.book_conns),
                self.settings.markets_per_subscription,
            )
        return placed

    async def add_markets(self, tickers: list[str]) -> None:
        """Subscribe new markets (live connections now; disconnected shards on reconnect, with a gap opened)."""
        for conn, ts in self.assign(tickers).items():
            if conn.connected:
                await conn.subscribe_markets(ts)
            else:
                rx = now_us()
                for t in ts:
                    self.router.sync.invalidate(t, OpenGap("disconnect", None, t, rx, rx))

    async def remove_markets(self, tickers: list[str]) -> None:
        """Unsubscribe markets (settled)."""
        by_conn: dict[WsConnection, list[str]] = {}
        for t in tickers:
            conn = self.shard_of.pop(t, None)
            self.unplaced.discard(t)
            if conn is not None:
                conn.markets.discard(t)
                by_conn.setdefault(conn, []).append(t)
            self.router.forget_market(t)
        for conn, ts in by_conn.items():
            await conn.unsubscribe_markets(ts)

    # ----- lifecycle ------------------------------------------------------------------------------------------
    async def start(self, initial: list[str]) -> None:
        """Open every connection and subscribe (``initial`` markets sharded over the order-book connections)."""
        import aiohttp

        # aiohttp caps a session at 100 connections by default: the seed runs 150 (6 global + 144 order book)
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, limit_per_host=0))
        self.assign(initial)
        for conn in self.connections:
            conn.start()

    async def wait_subscribed(self, timeout: float) -> bool:
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
        if self.session is not None:
            await self.session.close()

    def on_disconnect(self, conn: WsConnection, old_sids: dict[str, int]) -> None:
        self.metrics.reconnects.inc()
        self.router.on_disconnect(conn, old_sids)

    def on_reconnect(self, conn: WsConnection) -> None:
        pass
