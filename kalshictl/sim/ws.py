"""The WebSocket API at ``/trade-api/ws/v2``: commands, acks and Kalshi's error codes (``kalshictl.kalshi.ws_codes``).

Seq numbering follows the run's options (``SimConfig``; docs/sim.md "Kalshi fidelity"):

* every orderbook snapshot sent for a subscribe or ``add_markets`` consumes one seq of its sid;
* ``ack_seq="own"`` (default): an ``ok`` or ``unsubscribed`` ack consumes a seq of its sid, so the next data frame
  carries ack.seq + 1 (as a capture of Kalshi's demo exchange shows); ``"last"``: the ack carries the sid's last
  data seq and consumes none;
* ``snapshot_seq="consume"`` (default): a ``get_snapshot`` reply consumes a seq; ``"none"``: it carries the sid's
  current seq without advancing it.

Subscribing again to a channel the connection already has (``repeat_subscribe="merge"``, Kalshi since 2025-10-01)
joins the existing sid: the reply is an ``ok`` ack with the full ticker list and snapshots follow only for markets
that were not subscribed yet. ``repeat_subscribe="new_sid"`` opens a fresh sid per subscribe instead.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Generic

import orjson
from aiohttp import WSMsgType, web

from kalshictl.kalshi.ws_codes import MESSAGES, WsError
from kalshictl.sim.config import WS_PATH
from kalshictl.sim.connection import Connection
from kalshictl.sim.kalshi_http import error_response
from kalshictl.sim.subscriptions import CHANNELS, ORDERBOOK, PRIVATE, TICKERED, Sub
from kalshictl.sim.world import CommandWorld, K, World


class CommandError(Exception):
    """A command failed with Kalshi error ``code``."""

    def __init__(self, code: int, market_ticker: str | None = None, detail: str | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.market_ticker = market_ticker
        self.detail = detail


def _reply(conn: Connection, obj: dict) -> None:
    conn.send(orjson.dumps(obj))


def error_frame(cmd_id: Any, code: int, market_ticker: str | None = None, detail: str | None = None) -> bytes:
    """A Kalshi error frame."""
    msg: dict[str, Any] = {"code": int(code), "msg": detail or MESSAGES.get(code, "Error")}
    if market_ticker is not None:
        msg["market_ticker"] = market_ticker
    return orjson.dumps({"id": cmd_id, "type": "error", "msg": msg})


class CommandHandler(Generic[K]):
    """Executes the commands of one connection against the world's feed (synchronously, in order)."""

    def __init__(self, world: CommandWorld[K], conn: Connection, authenticated: bool) -> None:
        self.world = world
        self.feed = world.feed
        self.conn = conn
        self.authenticated = authenticated

    def handle_text(self, data: str | bytes) -> None:
        """Parse and execute one text frame; errors are answered with Kalshi error frames."""
        try:
            cmd = orjson.loads(data)
        except orjson.JSONDecodeError:
            self.conn.send(error_frame(0, WsError.BAD_MESSAGE))
            return
        if not isinstance(cmd, dict):
            self.conn.send(error_frame(0, WsError.BAD_MESSAGE))
            return
        cmd_id = cmd.get("id", 0)
        name = cmd.get("cmd")
        handler = {
            "subscribe": self.subscribe,
            "unsubscribe": self.unsubscribe,
            "update_subscription": self.update_subscription,
            "list_subscriptions": self.list_subscriptions,
        }.get(name if isinstance(name, str) else "")
        try:
            if handler is None:
                raise CommandError(WsError.UNKNOWN_COMMAND)
            params = cmd.get("params")
            if params is None:
                params = {}
            if not isinstance(params, dict):
                raise CommandError(WsError.BAD_MESSAGE)
            if name in ("subscribe", "update_subscription") and self.world.faults.roll_cmd_timeout():
                raise CommandError(WsError.COMMAND_TIMEOUT)  # the command was not executed
            handler(cmd_id, params)
        except CommandError as exc:
            self.conn.send(error_frame(cmd_id, exc.code, exc.market_ticker, exc.detail))

    # ----- helpers ----------------------------------------------------------------------------------------------
    @staticmethod
    def _tickers(params: dict) -> list[str] | None:
        if "market_tickers" in params and params["market_tickers"] is not None:
            tickers = params["market_tickers"]
            if not isinstance(tickers, list) or not all(isinstance(t, str) for t in tickers):
                raise CommandError(WsError.INVALID_PARAMETER, detail="market_tickers must be a list of strings")
            return list(dict.fromkeys(tickers))
        if "market_ticker" in params and params["market_ticker"] is not None:
            if not isinstance(params["market_ticker"], str):
                raise CommandError(WsError.INVALID_PARAMETER, detail="market_ticker must be a string")
            return [params["market_ticker"]]
        return None

    def _resolve(self, tickers: list[str]) -> list[K]:
        idxs = []
        for t in tickers:
            idx = self.world.market_key(t)
            if idx is None:
                raise CommandError(WsError.MARKET_NOT_FOUND, market_ticker=t)
            idxs.append(idx)
        return idxs

    def _sub(self, params: dict) -> Sub:
        sids = params.get("sids")
        if sids is not None:
            if not isinstance(sids, list) or len(sids) != 1:
                raise CommandError(WsError.EXACTLY_ONE_SID)
            sid = sids[0]
        elif "sid" in params:
            sid = params["sid"]
        else:
            raise CommandError(WsError.EXACTLY_ONE_SID)
        sub = self.conn.subs.get(sid) if isinstance(sid, int) else None
        if sub is None:
            raise CommandError(WsError.UNKNOWN_SID)
        return sub

    def _ack_seq(self, sub: Sub) -> int:
        """The seq an ``ok``/``unsubscribed`` ack carries (consuming one under ``ack_seq="own"``)."""
        if self.world.cfg.ack_seq == "own":
            sub.seq += 1
        return sub.seq

    def _ok(self, cmd_id: Any, sub: Sub, tickers: list[str]) -> None:
        seq = self._ack_seq(sub)
        _reply(self.conn, {"id": cmd_id, "sid": sub.sid, "seq": seq, "type": "ok", "msg": {"market_tickers": tickers}})

    # ----- commands ---------------------------------------------------------------------------------------------
    def subscribe(self, cmd_id: Any, params: dict) -> None:
        """``subscribe``: per channel a ``subscribed`` ack (new sid) or an ``ok`` ack (merged), then snapshots."""
        channels, tickers = self._subscribe_params(params)
        yes_price = bool(params.get("use_yes_price", False))
        keys = self._resolve(tickers) if tickers else []
        plan = [(channel, self._target(channel, tickers)) for channel in channels]  # validate all, then change
        for channel, target in plan:
            if target is not None:
                self._join(cmd_id, target, tickers, keys)
            else:
                self._open(cmd_id, channel, tickers, keys, yes_price)

    @staticmethod
    def _subscribe_params(params: dict) -> tuple[list[Any], list[str]]:
        """A subscribe's channels (not yet checked) and market tickers (empty: none named)."""
        if not params:
            raise CommandError(WsError.PARAMS_REQUIRED)
        channels = params.get("channels")
        if not channels or not isinstance(channels, list):
            raise CommandError(WsError.CHANNELS_REQUIRED)
        if ("market_id" in params or "market_ids" in params) and ORDERBOOK in channels:
            raise CommandError(WsError.MARKET_TICKER_REQUIRED)
        return channels, CommandHandler._tickers(params) or []

    def _target(self, channel: Any, tickers: list[str]) -> Sub | None:
        """Check one channel of a subscribe; returns the sid it joins (``repeat_subscribe="merge"``), or None: new."""
        if channel not in CHANNELS:
            raise CommandError(WsError.UNKNOWN_CHANNEL, detail=f"Unknown channel name: {channel}")
        if channel in PRIVATE and not self.authenticated:
            raise CommandError(WsError.AUTH_REQUIRED)
        if channel == ORDERBOOK and not tickers:
            raise CommandError(WsError.MARKET_TICKER_REQUIRED)
        per_market = bool(tickers) and channel in TICKERED
        target = self._joinable(channel, per_market)
        if per_market:
            joined = target.tickers if target is not None and target.tickers is not None else set()
            if len(set(tickers) | joined) > self.world.cfg.max_markets_per_sub:
                raise CommandError(WsError.TOO_MANY_MARKETS)
        return target

    def _joinable(self, channel: str, per_market: bool) -> Sub | None:
        """The connection's sid of ``channel`` a repeated subscribe joins; error 6 where it may not subscribe again."""
        existing = self.conn.by_channel.get(channel)
        if not existing:
            return None
        if (existing[0].tickers is None) != (not per_market):
            raise CommandError(WsError.ALREADY_SUBSCRIBED)  # all-markets and per-market on one channel
        if self.world.cfg.repeat_subscribe == "merge":
            return existing[0]
        if not per_market:
            raise CommandError(WsError.ALREADY_SUBSCRIBED)  # a second global subscription
        return None

    def _join(self, cmd_id: Any, target: Sub, tickers: list[str], keys: list[K]) -> None:
        """A repeated subscribe merged into ``target``: ``ok`` ack with every ticker, snapshots of the new ones."""
        new: list[tuple[str, K]] = []
        if tickers and target.channel in TICKERED:
            assert target.tickers is not None
            new = [(t, k) for t, k in zip(tickers, keys, strict=True) if t not in target.tickers]
            self.feed.add_tickers(target, [t for t, _ in new])
        self._ok(cmd_id, target, sorted(target.tickers) if target.tickers is not None else [])
        if target.channel == ORDERBOOK:
            for _, key in new:
                self.feed.snapshot(target, key)

    def _open(self, cmd_id: Any, channel: str, tickers: list[str], keys: list[K], yes_price: bool) -> None:
        """A new sid of ``channel``: ``subscribed`` ack, then a snapshot per market of an order-book channel."""
        conn = self.conn
        sid = conn.next_sid
        conn.next_sid += 1
        sub = Sub(conn, sid, channel, set(tickers) if tickers and channel in TICKERED else None, yes_price)
        conn.subs[sid] = sub
        conn.by_channel.setdefault(channel, []).append(sub)
        self.feed.register(sub)
        _reply(conn, {"id": cmd_id, "type": "subscribed", "msg": {"channel": channel, "sid": sid}})
        if channel == ORDERBOOK:
            for key in keys:
                self.feed.snapshot(sub, key)

    def _drop_sub(self, sub: Sub) -> None:
        self.conn.subs.pop(sub.sid, None)
        subs = self.conn.by_channel.get(sub.channel, [])
        if sub in subs:
            subs.remove(sub)
        if not subs:
            self.conn.by_channel.pop(sub.channel, None)
        self.feed.unregister(sub)

    def unsubscribe(self, cmd_id: Any, params: dict) -> None:
        """``unsubscribe {sids}``: one ``unsubscribed`` ack per sid."""
        sids = params.get("sids")
        if not sids or not isinstance(sids, list):
            raise CommandError(WsError.SIDS_REQUIRED)
        for sid in sids:
            if not isinstance(sid, int) or sid not in self.conn.subs:
                raise CommandError(WsError.UNKNOWN_SID)
        for sid in sids:
            sub = self.conn.subs[sid]
            self._drop_sub(sub)
            _reply(self.conn, {"id": cmd_id, "sid": sid, "seq": self._ack_seq(sub), "type": "unsubscribed"})

    def update_subscription(self, cmd_id: Any, params: dict) -> None:
        """``update_subscription``: add_markets | delete_markets | get_snapshot on exactly one sid."""
        if not params:
            raise CommandError(WsError.PARAMS_REQUIRED)
        sub = self._sub(params)
        action = params.get("action")
        if not action:
            raise CommandError(WsError.ACTION_REQUIRED)
        if action not in ("add_markets", "delete_markets", "get_snapshot"):
            raise CommandError(WsError.UNSUPPORTED_ACTION)
        tickers = self._tickers(params)
        if not tickers:
            raise CommandError(WsError.MARKET_TICKER_REQUIRED)
        if sub.tickers is None:
            raise CommandError(WsError.INVALID_PARAMETER, detail="subscription is not per market")
        idxs = self._resolve(tickers)
        if action == "get_snapshot":
            if sub.channel != ORDERBOOK:
                raise CommandError(WsError.UNSUPPORTED_ACTION)
            for t in tickers:
                if t not in sub.tickers:
                    raise CommandError(WsError.INVALID_PARAMETER, market_ticker=t, detail="market not in subscription")
        elif action == "add_markets":
            if len(sub.tickers | set(tickers)) > self.world.cfg.max_markets_per_sub:
                raise CommandError(WsError.TOO_MANY_MARKETS)
            new = [(t, i) for t, i in zip(tickers, idxs, strict=True) if t not in sub.tickers]
            self.feed.add_tickers(sub, [t for t, _ in new])
            idxs = [i for _, i in new]
        else:
            self.feed.remove_tickers(sub, tickers)
            idxs = []
        self._ok(cmd_id, sub, sorted(sub.tickers) if action != "get_snapshot" else tickers)
        if sub.channel == ORDERBOOK:
            consume = action != "get_snapshot" or self.world.cfg.snapshot_seq == "consume"
            for idx in idxs:
                self.feed.snapshot(sub, idx, consume)

    def list_subscriptions(self, cmd_id: Any, params: dict) -> None:
        """``list_subscriptions``: ``{"type":"ok","msg":[{"channel","sid"}...]}``."""
        subs = [{"channel": s.channel, "sid": s.sid} for s in sorted(self.conn.subs.values(), key=lambda s: s.sid)]
        _reply(self.conn, {"id": cmd_id, "type": "ok", "msg": subs})


async def handle_ws(world: World[K], request: web.Request) -> web.StreamResponse:
    """aiohttp handler of the WebSocket upgrade: auth, refusal faults, then the command loop."""
    problem = world.check_auth(request, "GET", WS_PATH)
    if problem is not None:
        world.counters.auth_rejected += 1
        return error_response(401, "authentication_error", problem)
    if world.faults.should_refuse():
        world.counters.connections_refused += 1
        return error_response(503, "service_unavailable", "the exchange is refusing new connections")
    ws = web.WebSocketResponse(autoping=True, max_msg_size=16 * 1024 * 1024)
    await ws.prepare(request)
    world.counters.connections_open += 1
    world.counters.connections_total += 1
    conn = world.connections.open(ws, request.transport, world.cfg.ws_buffer_bytes, world.counters)
    handler = CommandHandler(world, conn, authenticated=world.public_key is not None)
    writer = asyncio.create_task(conn.run_writer())
    heartbeat = asyncio.create_task(conn.run_heartbeat(world.cfg.heartbeat_s))
    try:
        await _read_commands(ws, conn, handler)
    finally:
        conn.finish()
        for sub in list(conn.subs.values()):
            world.feed.unregister(sub)
        conn.subs.clear()
        conn.by_channel.clear()
        world.connections.forget(conn)
        world.counters.connections_open -= 1
        heartbeat.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(writer, 1.0)
        with contextlib.suppress(Exception):
            await ws.close()
    return ws


async def _read_commands(ws: web.WebSocketResponse, conn: Connection, handler: CommandHandler[K]) -> None:
    """Execute each text frame the client sends, in order, until it or the connection closes."""
    with contextlib.suppress(ConnectionError, asyncio.CancelledError):
        async for msg in ws:
            if conn.closed:
                break
            if msg.type == WSMsgType.TEXT:
                handler.handle_text(msg.data)
            elif msg.type == WSMsgType.BINARY:
                conn.send(error_frame(0, WsError.BAD_MESSAGE))
            elif msg.type == WSMsgType.ERROR:
                break
