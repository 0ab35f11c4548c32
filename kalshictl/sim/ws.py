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

from typing import TYPE_CHECKING, Any

import orjson

from kalshictl.kalshi.ws_codes import MESSAGES, WsError
from kalshictl.sim.feed import CHANNELS, GLOBAL, INDEXED, ORDERBOOK, PRIVATE, TICKERED, Sub

if TYPE_CHECKING:
    from kalshictl.sim.connection import Connection
    from kalshictl.sim.world import World


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


class CommandHandler:
    """Executes the commands of one connection against the world's feed (synchronously, in order)."""

    def __init__(self, ex: World, conn: Connection, authenticated: bool) -> None:
        self.ex = ex
        self.feed = ex.feed
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
            if name in ("subscribe", "update_subscription") and self.ex.faults.roll_cmd_timeout():
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

    def _resolve(self, tickers: list[str]) -> list[Any]:
        idxs = []
        for t in tickers:
            idx = self.ex.market_key(t)
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
        if self.ex.cfg.ack_seq == "own":
            sub.seq += 1
        return sub.seq

    def _ok(self, cmd_id: Any, sub: Sub, tickers: list[str]) -> None:
        seq = self._ack_seq(sub)
        _reply(self.conn, {"id": cmd_id, "sid": sub.sid, "seq": seq, "type": "ok", "msg": {"market_tickers": tickers}})

    # ----- commands ---------------------------------------------------------------------------------------------
    def subscribe(self, cmd_id: Any, params: dict) -> None:
        """``subscribe``: per channel a ``subscribed`` ack (new sid) or an ``ok`` ack (merged), then snapshots."""
        if not params:
            raise CommandError(WsError.PARAMS_REQUIRED)
        channels = params.get("channels")
        if not channels or not isinstance(channels, list):
            raise CommandError(WsError.CHANNELS_REQUIRED)
        if ("market_id" in params or "market_ids" in params) and ORDERBOOK in channels:
            raise CommandError(WsError.MARKET_TICKER_REQUIRED)
        tickers = self._tickers(params)
        yes_price = bool(params.get("use_yes_price", False))
        idxs = self._resolve(tickers) if tickers else []
        cfg = self.ex.cfg
        merge = cfg.repeat_subscribe == "merge"
        plan: list[tuple[str, Sub | None]] = []
        for channel in channels:  # validate everything before changing anything
            if channel not in CHANNELS:
                raise CommandError(WsError.UNKNOWN_CHANNEL, detail=f"Unknown channel name: {channel}")
            if channel in PRIVATE and not self.authenticated:
                raise CommandError(WsError.AUTH_REQUIRED)
            if channel == ORDERBOOK and not tickers:
                raise CommandError(WsError.MARKET_TICKER_REQUIRED)
            per_market = bool(tickers) and channel in TICKERED
            existing = self.conn.by_channel.get(channel)
            target: Sub | None = None
            if existing:
                if (existing[0].tickers is None) != (not per_market):
                    raise CommandError(WsError.ALREADY_SUBSCRIBED)  # all-markets and per-market on one channel
                if merge:
                    target = existing[0]
                elif not per_market:
                    raise CommandError(WsError.ALREADY_SUBSCRIBED)  # a second global subscription
            if per_market:
                total = len(set(tickers or ()) | (target.tickers or set() if target is not None else set()))
                if total > cfg.max_markets_per_sub:
                    raise CommandError(WsError.TOO_MANY_MARKETS)
            plan.append((channel, target))
        for channel, target in plan:
            per_market = bool(tickers) and channel in TICKERED
            if target is not None:
                new = []
                if per_market:
                    assert target.tickers is not None
                    new = [(t, i) for t, i in zip(tickers or [], idxs, strict=True) if t not in target.tickers]
                    self.feed.add_tickers(target, [t for t, _ in new])
                self._ok(cmd_id, target, sorted(target.tickers) if target.tickers is not None else [])
                if channel == ORDERBOOK:
                    for _, idx in new:
                        self.feed.snapshot(target, idx)
                continue
            sid = self.conn.next_sid
            self.conn.next_sid += 1
            sub_tickers = set(tickers) if per_market else None
            if channel in GLOBAL or channel in INDEXED:
                sub_tickers = None
            sub = Sub(self.conn, sid, channel, sub_tickers, yes_price)
            self.conn.subs[sid] = sub
            self.conn.by_channel.setdefault(channel, []).append(sub)
            self.feed.register(sub)
            _reply(self.conn, {"id": cmd_id, "type": "subscribed", "msg": {"channel": channel, "sid": sid}})
            if channel == ORDERBOOK:
                for idx in idxs:
                    self.feed.snapshot(sub, idx)

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
            if len(sub.tickers | set(tickers)) > self.ex.cfg.max_markets_per_sub:
                raise CommandError(WsError.TOO_MANY_MARKETS)
            new = [(t, i) for t, i in zip(tickers, idxs, strict=True) if t not in sub.tickers]
            self.feed.add_tickers(sub, [t for t, _ in new])
            idxs = [i for _, i in new]
        else:
            self.feed.remove_tickers(sub, tickers)
            idxs = []
        self._ok(cmd_id, sub, sorted(sub.tickers) if action != "get_snapshot" else tickers)
        if sub.channel == ORDERBOOK:
            consume = action != "get_snapshot" or self.ex.cfg.snapshot_seq == "consume"
            for idx in idxs:
                self.feed.snapshot(sub, idx, consume)

    def list_subscriptions(self, cmd_id: Any, params: dict) -> None:
        """``list_subscriptions``: ``{"type":"ok","msg":[{"channel","sid"}...]}``."""
        subs = [{"channel": s.channel, "sid": s.sid} for s in sorted(self.conn.subs.values(), key=lambda s: s.sid)]
        _reply(self.conn, {"id": cmd_id, "type": "ok", "msg": subs})


async def handle_ws(ex: World, request: Any) -> Any:
    """aiohttp handler of the WebSocket upgrade: auth, refusal faults, then the command loop."""
    import asyncio
    import contextlib

    from aiohttp import WSMsgType, web

    from kalshictl.sim.config import WS_PATH
    from kalshictl.sim.connection import Connection
    from kalshictl.sim.rest import error_response

    problem = ex.check_auth(request, "GET", WS_PATH)
    if problem is not None:
        ex.counters.auth_rejected += 1
        return error_response(401, "authentication_error", problem)
    if ex.faults.should_refuse():
        ex.counters.connections_refused += 1
        return error_response(503, "service_unavailable", "the exchange is refusing new connections")
    ws = web.WebSocketResponse(autoping=True, max_msg_size=16 * 1024 * 1024)
    await ws.prepare(request)
    ex.counters.connections_open += 1
    ex.counters.connections_total += 1
    conn = Connection(ex.next_connection_id(), ws, request.transport, ex.cfg.ws_buffer_bytes, ex.counters)
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
                conn.send(error_frame(0, WsError.BAD_MESSAGE))
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
        ex.counters.connections_open -= 1
        heartbeat.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(writer, 1.0)
        with contextlib.suppress(Exception):
            await ws.close()
    return ws
