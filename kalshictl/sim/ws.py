"""The WebSocket API at ``/trade-api/ws/v2``: commands, acks and Kalshi's error codes.

Subscribing again to a channel the connection already has merges the new tickers into that subscription (same sid),
as Kalshi does since 2025-10-01. Acks of ``unsubscribe`` / ``update_subscription`` carry ``seq`` equal to the last
data seq of that sid (they do not consume one); each orderbook snapshot (including ``get_snapshot``) consumes one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from kalshictl.sim.feed import CHANNELS, GLOBAL, INDEXED, ORDERBOOK, PRIVATE, TICKERED, Sub

if TYPE_CHECKING:
    from kalshictl.sim.connection import Connection
    from kalshictl.sim.exchange import SimExchange

ERRORS = {
    1: "Unable to process message",
    2: "Params required",
    3: "Channels required",
    4: "Subscription IDs required",
    5: "Unknown command",
    6: "Already subscribed",
    7: "Unknown subscription ID",
    8: "Unknown channel name",
    9: "Authentication required",
    10: "Channel error",
    11: "Invalid parameter",
    12: "Exactly one subscription ID is required",
    13: "Unsupported action",
    14: "Market Ticker required",
    15: "Action required",
    16: "Market not found",
    17: "Internal error",
    26: "Too many markets in subscription",
}


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
    msg: dict[str, Any] = {"code": code, "msg": detail or ERRORS.get(code, "Error")}
    if market_ticker is not None:
        msg["market_ticker"] = market_ticker
    return orjson.dumps({"id": cmd_id, "type": "error", "msg": msg})


class CommandHandler:
    """Executes the commands of one connection against the exchange's feed (synchronously, in order)."""

    def __init__(self, ex: SimExchange, conn: Connection, authenticated: bool) -> None:
        self.ex = ex
        self.feed = ex.feed
        self.conn = conn
        self.authenticated = authenticated

    def handle_text(self, data: str | bytes) -> None:
        """Parse and execute one text frame; errors are answered with Kalshi error frames."""
        try:
            cmd = orjson.loads(data)
        except orjson.JSONDecodeError:
            self.conn.send(error_frame(0, 1))
            return
        if not isinstance(cmd, dict):
            self.conn.send(error_frame(0, 1))
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
                raise CommandError(5)
            params = cmd.get("params")
            if params is None:
                params = {}
            if not isinstance(params, dict):
                raise CommandError(1)
            handler(cmd_id, params)
        except CommandError as exc:
            self.conn.send(error_frame(cmd_id, exc.code, exc.market_ticker, exc.detail))

    # ----- helpers ----------------------------------------------------------------------------------------------
    @staticmethod
    def _tickers(params: dict) -> list[str] | None:
        if "market_tickers" in params and params["market_tickers"] is not None:
            tickers = params["market_tickers"]
            if not isinstance(tickers, list) or not all(isinstance(t, str) for t in tickers):
                raise CommandError(11, detail="market_tickers must be a list of strings")
            return list(dict.fromkeys(tickers))
        if "market_ticker" in params and params["market_ticker"] is not None:
            if not isinstance(params["market_ticker"], str):
                raise CommandError(11, detail="market_ticker must be a string")
            return [params["market_ticker"]]
        return None

    def _resolve(self, tickers: list[str]) -> list[int]:
        idxs = []
        for t in tickers:
            idx = self.ex.universe.index_of(t)
            if idx is None:
                raise CommandError(16, market_ticker=t)
            idxs.append(idx)
        return idxs

    def _sub(self, params: dict) -> Sub:
        sids = params.get("sids")
        if sids is not None:
            if not isinstance(sids, list) or len(sids) != 1:
                raise CommandError(12)
            sid = sids[0]
        elif "sid" in params:
            sid = params["sid"]
        else:
            raise CommandError(12)
        sub = self.conn.subs.get(sid) if isinstance(sid, int) else None
        if sub is None:
            raise CommandError(7)
        return sub

    # ----- commands ---------------------------------------------------------------------------------------------
    def subscribe(self, cmd_id: Any, params: dict) -> None:
        """``subscribe``: one ``subscribed`` ack per channel, then snapshots for orderbook_delta."""
        if not params:
            raise CommandError(2)
        channels = params.get("channels")
        if not channels or not isinstance(channels, list):
            raise CommandError(3)
        if ("market_id" in params or "market_ids" in params) and ORDERBOOK in channels:
            raise CommandError(14)
        tickers = self._tickers(params)
        yes_price = bool(params.get("use_yes_price", False))
        idxs = self._resolve(tickers) if tickers else []
        cap = self.ex.cfg.max_markets_per_sub
        for channel in channels:  # validate everything before changing anything
            if channel not in CHANNELS:
                raise CommandError(8, detail=f"Unknown channel name: {channel}")
            if channel in PRIVATE and not self.authenticated:
                raise CommandError(9)
            if channel == ORDERBOOK and not tickers:
                raise CommandError(14)
            existing = self.conn.by_channel.get(channel)
            if existing is not None and (existing.tickers is None or not tickers or channel not in TICKERED):
                raise CommandError(6)
            if tickers and channel in TICKERED:
                total = len(set(tickers) | (existing.tickers if existing is not None and existing.tickers else set()))
                if total > cap:
                    raise CommandError(26)
        for channel in channels:
            existing = self.conn.by_channel.get(channel)
            if existing is not None:
                new = [(t, i) for t, i in zip(tickers or [], idxs, strict=True) if t not in existing.tickers]
                self.feed.add_tickers(existing, [t for t, _ in new])
                _reply(
                    self.conn, {"id": cmd_id, "type": "subscribed", "msg": {"channel": channel, "sid": existing.sid}}
                )
                if channel == ORDERBOOK:
                    for _, idx in new:
                        self.feed.snapshot(existing, idx)
                continue
            sid = self.conn.next_sid
            self.conn.next_sid += 1
            sub_tickers = set(tickers) if tickers and channel in TICKERED else None
            if channel in GLOBAL or channel in INDEXED:
                sub_tickers = None
            sub = Sub(self.conn, sid, channel, sub_tickers, yes_price)
            self.conn.subs[sid] = sub
            self.conn.by_channel[channel] = sub
            self.feed.register(sub)
            _reply(self.conn, {"id": cmd_id, "type": "subscribed", "msg": {"channel": channel, "sid": sid}})
            if channel == ORDERBOOK:
                for idx in idxs:
                    self.feed.snapshot(sub, idx)

    def unsubscribe(self, cmd_id: Any, params: dict) -> None:
        """``unsubscribe {sids}``: one ``unsubscribed`` ack per sid."""
        sids = params.get("sids")
        if not sids or not isinstance(sids, list):
            raise CommandError(4)
        for sid in sids:
            if not isinstance(sid, int) or sid not in self.conn.subs:
                raise CommandError(7)
        for sid in sids:
            sub = self.conn.subs.pop(sid)
            self.conn.by_channel.pop(sub.channel, None)
            self.feed.unregister(sub)
            _reply(self.conn, {"id": cmd_id, "sid": sid, "seq": sub.seq, "type": "unsubscribed"})

    def update_subscription(self, cmd_id: Any, params: dict) -> None:
        """``update_subscription``: add_markets | delete_markets | get_snapshot on exactly one sid."""
        if not params:
            raise CommandError(2)
        sub = self._sub(params)
        action = params.get("action")
        if not action:
            raise CommandError(15)
        if action not in ("add_markets", "delete_markets", "get_snapshot"):
            raise CommandError(13)
        tickers = self._tickers(params)
        if not tickers:
            raise CommandError(14)
        if sub.tickers is None:
            raise CommandError(11, detail="subscription is not per market")
        idxs = self._resolve(tickers)
        if action == "get_snapshot":
            if sub.channel != ORDERBOOK:
                raise CommandError(13)
            for t in tickers:
                if t not in sub.tickers:
                    raise CommandError(11, market_ticker=t, detail="market is not in this subscription")
        elif action == "add_markets":
            if len(sub.tickers | set(tickers)) > self.ex.cfg.max_markets_per_sub:
                raise CommandError(26)
            new = [(t, i) for t, i in zip(tickers, idxs, strict=True) if t not in sub.tickers]
            self.feed.add_tickers(sub, [t for t, _ in new])
            idxs = [i for _, i in new]
        else:
            self.feed.remove_tickers(sub, tickers)
            idxs = []
        ack_tickers = sorted(sub.tickers) if action != "get_snapshot" else tickers
        _reply(
            self.conn,
            {"id": cmd_id, "sid": sub.sid, "seq": sub.seq, "type": "ok", "msg": {"market_tickers": ack_tickers}},
        )
        if sub.channel == ORDERBOOK:
            for idx in idxs:
                self.feed.snapshot(sub, idx)

    def list_subscriptions(self, cmd_id: Any, params: dict) -> None:
        """``list_subscriptions``: ``{"type":"ok","msg":[{"channel","sid"}...]}``."""
        subs = [{"channel": s.channel, "sid": s.sid} for s in sorted(self.conn.subs.values(), key=lambda s: s.sid)]
        _reply(self.conn, {"id": cmd_id, "type": "ok", "msg": subs})


async def handle_ws(ex: SimExchange, request: Any) -> Any:
    """aiohttp handler of the WebSocket upgrade: auth, refusal faults, then the command loop."""
    import asyncio
    import contextlib

    from aiohttp import WSMsgType, web

    from kalshictl.sim.config import WS_PATH
    from kalshictl.sim.connection import Connection
    from kalshictl.sim.rest import error_response

    problem = ex.check_auth(request, "GET", WS_PATH)
    if problem is not None:
        ex.stats.auth_rejected += 1
        return error_response(401, "authentication_error", problem)
    if ex.faults.should_refuse():
        ex.stats.connections_refused += 1
        return error_response(503, "service_unavailable", "the exchange is refusing new connections")
    ws = web.WebSocketResponse(autoping=True, max_msg_size=16 * 1024 * 1024)
    await ws.prepare(request)
    ex.stats.connections_open += 1
    ex.stats.connections_total += 1
    conn = Connection(ex.next_connection_id(), ws, request.transport, ex.cfg.ws_buffer_bytes, ex.stats)
    ex.connections[conn.cid] = conn
    handler = CommandHandler(ex, conn, authenticated=ex.public_key is not None)
    writer = asyncio.create_task(conn.run_writer())
    heartbeat = asyncio.create_task(conn.run_heartbeat(ex.cfg.heartbeat_s))
    try:
        async for msg in ws:
            if conn.closed:
                break
            if msg.type == WSMsgType.TEXT:
                handler.handle_text(msg.data)
            elif msg.type == WSMsgType.BINARY:
                conn.send(error_frame(0, 1))
            elif msg.type == WSMsgType.ERROR:
                break
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        conn.closed = True
        conn.wake.set()
        for sub in list(conn.subs.values()):
            ex.feed.unregister(sub)
        conn.subs.clear()
        conn.by_channel.clear()
        ex.connections.pop(conn.cid, None)
        ex.stats.connections_open -= 1
        heartbeat.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(writer, 1.0)
        with contextlib.suppress(Exception):
            await ws.close()
    return ws
