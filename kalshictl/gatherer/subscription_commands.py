"""The router's commands to the exchange and its answers to them: subscribe / add / delete / get_snapshot / seq
probes that keep the exchange's subscriptions equal to the placement in :mod:`kalshictl.gatherer.shards`, and the
handling of ``subscribed``, ``ok`` and error replies (retries, error 26 splits and caps, unknown markets).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from kalshictl.config import WebSocketSettings
from kalshictl.gatherer.coverage_windows import CoverageWindows
from kalshictl.gatherer.router_state import (
    OPTIONAL_CHANNELS,
    ORDERBOOK,
    Background,
    Cmd,
    ConnState,
    ConnStates,
    LogLimiter,
    RouterStats,
)
from kalshictl.gatherer.sequence import MarketSync
from kalshictl.gatherer.stray_frames import StrayFrames
from kalshictl.kalshi.messages import Ack, ErrorMsg, Subscribed
from kalshictl.kalshi.ws_codes import TERMINAL, WsError
from kalshictl.units import now_us

if TYPE_CHECKING:
    from kalshictl.gatherer.connections import WsConnection
    from kalshictl.gatherer.metrics import GathererMetrics
    from kalshictl.gatherer.shards import Shards, Subscription

SNAPSHOT_CHUNK = 200  # tickers per get_snapshot / add / delete command
MAX_RETRY_DELAY_S = 8.0

log = logging.getLogger("kalshictl.gatherer.router")


class SubscriptionCommands:
    """The router's commands and the exchange's replies to them. Markets it places are untrusted (``sync``) until
    their first snapshot; markets it removes leave the book state (``forget_market``) and their windows."""

    def __init__(
        self,
        states: ConnStates,
        stats: RouterStats,
        metrics: GathererMetrics,
        settings: WebSocketSettings,
        background: Background,
        sync: MarketSync,
        snapshot_requested: dict[str, float],
        windows: CoverageWindows,
        strays: StrayFrames,
        forget_market: Callable[[str], None],
        on_unknown_market: Callable[[str], object] | None,
    ) -> None:
        self.states = states
        self.stats = stats
        self.metrics = metrics
        self.settings = settings
        self.use_yes_price = bool(settings.use_yes_price)
        self.background = background
        self.spawn = background.spawn
        self.sync = sync
        self.snapshot_requested = snapshot_requested  # ticker -> when its snapshot was asked for (monotonic s)
        self.windows = windows
        self.strays = strays
        self.forget_market = forget_market
        self.on_unknown_market = on_unknown_market  # error 16: the exchange does not know the market
        self.shards: Shards | None = None  # the placement and the order-book connections, once attached
        self.book_conns: Sequence[WsConnection] = ()
        self._log = LogLimiter()

    def attach(self, shards: Shards, book_conns: Sequence[WsConnection]) -> None:
        self.shards = shards
        self.book_conns = book_conns

    def resubscribe(self, conn: WsConnection, st: ConnState) -> None:
        """A connection (re)opened: subscribe what it should carry."""
        if conn.kind == "global":
            for ch in st.channels:  # one command per channel: an unknown optional channel fails alone
                params = {"channels": [ch]}
                self.spawn(conn.send("subscribe", params, Cmd("global", channel=ch, params=params)))
            return
        assert self.shards is not None
        for sub in self.shards.subs[conn]:
            sub.sid = None
            sub.subscribing = False
            sub.retries = 0
            self.spawn(self._subscribe(sub))

    async def _subscribe(self, sub: Subscription) -> None:
        if not sub.tickers or sub.subscribing or sub.active or not sub.conn.connected:
            return
        token = object()  # this attempt's: a stale attempt (socket replaced while it waited) must not clear a newer one
        sub.subscribing = token
        tickers = sorted(sub.tickers)
        params = {"channels": [ORDERBOOK], "market_tickers": tickers, "use_yes_price": self.use_yes_price}
        sent = await sub.conn.send("subscribe", params, Cmd("subscribe", sub, tickers))
        if sent is None and sub.subscribing is token:
            sub.subscribing = False

    async def _update(self, sub: Subscription, action: str, tickers: list[str], kind: str) -> None:
        if sub.sid is None or not tickers:
            return
        for i in range(0, len(tickers), SNAPSHOT_CHUNK):
            chunk = tickers[i : i + SNAPSHOT_CHUNK]
            params = {"sids": [sub.sid], "action": action, "market_tickers": chunk}
            await sub.conn.send("update_subscription", params, Cmd(kind, sub, chunk))

    def add_markets(self, tickers: Iterable[str]) -> int:
        """Place new markets and subscribe them (a live subscription gets ``add_markets``; a new one ``subscribe``).
        Returns how many were placed."""
        assert self.shards is not None
        rx = now_us()
        added = self.shards.place(tickers)
        for sub, ts in added.items():
            for t in ts:
                self.strays.placed(t)
                self.sync.invalidate(t, rx)  # untrusted until its first snapshot
            if sub.active:
                self.spawn(self._update(sub, "add_markets", ts, "add"))
            else:
                self.spawn(self._subscribe(sub))
        return sum(len(v) for v in added.values())

    def remove_markets(self, tickers: Iterable[str]) -> None:
        """Unsubscribe markets (slots freed); a subscription left empty is unsubscribed (unless its sid is shared)."""
        assert self.shards is not None
        tickers = list(tickers)
        sub_of = self.shards.sub_of
        self.strays.removed((t, sub.conn, sub.sid) for t in tickers if (sub := sub_of.get(t)) is not None)
        removed = self.shards.remove(tickers)
        for t in tickers:
            self.forget_market(t)
        for sub, ts in removed.items():
            if sub.window is not None:
                self.windows.resynced(sub, ts, now_us())
            if sub.sid is None:
                continue
            st = self.states[sub.conn].sids.get(sub.sid)
            shared = st is not None and any(s is not sub for s in st.subs)
            if not sub.tickers and not shared:
                sid, sub.sid = sub.sid, None
                if st is not None:
                    st.subs.remove(sub)
                self.shards.drop_sub(sub)
                self.spawn(self.strays.unsubscribe_sid(sub.conn, sid))
            else:
                self.spawn(self._update(sub, "delete_markets", ts, "delete"))

    def request_snapshots(self, sub: Subscription, tickers: list[str]) -> None:
        """Ask for fresh snapshots of these markets of one subscription (on its own sid)."""
        if not tickers or sub.sid is None:
            return
        now = time.monotonic()
        for t in tickers:
            self.snapshot_requested[t] = now
        self.metrics.resnapshots.inc(len(tickers))
        self.spawn(self._update(sub, "get_snapshot", tickers, "snapshot"))

    def retry_stale_snapshots(self, older_than_s: float = 5.0) -> int:
        """Re-request snapshots that have not arrived (lost command, refused, reconnect raced)."""
        if self.shards is None:
            return 0
        now = time.monotonic()
        by_sub: dict[Subscription, list[str]] = {}
        for t in self.sync.awaiting:
            if now - self.snapshot_requested.get(t, 0.0) < older_than_s:
                continue
            sub = self.shards.sub_of.get(t)
            if sub is not None and sub.active and sub.conn.connected:
                by_sub.setdefault(sub, []).append(t)
        for sub, ts in by_sub.items():
            self.request_snapshots(sub, ts)
        return sum(len(v) for v in by_sub.values())

    def probe(self, conn: WsConnection) -> int:
        """Seq probe of every sid of an order-book connection: re-adding a market already subscribed is a no-op whose
        ``ok`` ack carries a seq ordered after the data on the socket. Returns how many probes were sent."""
        st = self.states.get(conn)
        if st is None or not conn.connected:
            return 0
        n = 0
        for sid, ss in st.sids.items():
            sub = next((s for s in ss.subs if s.tickers and s.sid == sid), None)
            if sub is None:
                continue
            ticker = next(iter(sub.tickers))
            params = {"sids": [sid], "action": "add_markets", "market_tickers": [ticker]}
            self.spawn(conn.send("update_subscription", params, Cmd("probe", sub, [ticker])))
            n += 1
        return n

    def probe_all(self, min_tokens: float = 0.0) -> int:
        """Probe every order-book connection that has at least ``min_tokens`` command tokens to spare."""
        return sum(self.probe(c) for c in self.book_conns if c.bucket.tokens >= min_tokens)

    def on_ack(self, conn: WsConnection, a: Ack) -> Cmd | None:
        """An ``ok``/``unsubscribed`` ack: the command it answers (returned) is done; a subscribe merged into an
        existing sid ("merge") is acknowledged by it, an ``add_markets``' snapshots follow it. Its seq is the
        :class:`~kalshictl.gatherer.gap_detection.GapDetector`'s."""
        cmd = conn.pending.pop(a.id, None) if a.id is not None else None
        if not isinstance(cmd, Cmd):
            return None
        if cmd.kind == "probe":
            self.stats.probe_replies += 1
        if a.sid is None:
            return cmd
        if cmd.kind == "subscribe" and cmd.sub is not None:
            self._sub_acked(conn, cmd, a.sid)  # a repeat subscribe merged into an existing sid ("merge")
        elif cmd.kind == "add":
            self._expect_snapshots(cmd.tickers)
        return cmd

    def on_subscribed(self, conn: WsConnection, s: Subscribed, rx: int) -> None:
        cmd = conn.pending.pop(s.id, None) if s.id is not None else None
        st = self.states[conn]
        if not isinstance(cmd, Cmd):
            return
        match cmd.kind:
            case "global":
                st.channel_sid[s.channel] = s.sid
                st.sid_state(s.sid, s.channel)
                self.windows.channel_resumed(st, s.channel, rx)
            case "subscribe" if cmd.sub is not None:
                self._sub_acked(conn, cmd, s.sid)

    def _sub_acked(self, conn: WsConnection, cmd: Cmd, sid: int) -> None:
        """A subscription's subscribe was accepted into ``sid`` (its own, or an existing one it merged into)."""
        sub = cmd.sub
        assert sub is not None
        sub.subscribing = False
        sub.retries = 0
        if sub.sid is not None and sub.sid != sid:  # a second subscribe of one subscription opened a second sid
            log.warning("%s: %s subscribed twice (sids %d, %d): dropping the second", conn.name, sub.name, sub.sid, sid)
            self.spawn(self.strays.unsubscribe_sid(conn, sid))
            return
        ss = self.states[conn].sid_state(sid)
        if sub not in ss.subs:
            ss.subs.append(sub)
        sub.sid = sid
        self._expect_snapshots(cmd.tickers)
        if self.shards is not None:
            self.shards.largest_ok = max(self.shards.largest_ok, len(cmd.tickers))
        sent = set(cmd.tickers)
        extra = sorted(sub.tickers - sent)  # placed while the subscribe was in flight
        gone = sorted(sent - sub.tickers)  # removed meanwhile
        if extra:
            self.spawn(self._update(sub, "add_markets", extra, "add"))
        if gone:
            self.spawn(self._update(sub, "delete_markets", gone, "delete"))

    def _expect_snapshots(self, tickers: list[str]) -> None:
        """A subscribe/add was acknowledged: the markets' snapshots follow it on the socket (not re-requested for
        a while by :meth:`retry_stale_snapshots`)."""
        now = time.monotonic()
        rx = now_us()
        awaiting = self.sync.awaiting
        for t in tickers:
            if t in awaiting:
                self.snapshot_requested[t] = now
                sub = self.shards.sub_of.get(t) if self.shards is not None else None
                if sub is not None and (sub.window is None or t not in sub.window.awaiting):
                    awaiting[t] = rx  # a first snapshot: untrusted time counts from the subscription's ack

    def on_error(self, conn: WsConnection, e: ErrorMsg) -> None:
        cmd = conn.pending.pop(e.id, None) if e.id else None
        kind = cmd.kind if isinstance(cmd, Cmd) else "-"
        if kind == "probe":
            self.stats.probe_replies += 1
        if self._log.ok(f"err:{e.code}:{kind}"):
            log.warning("%s: exchange error %d (%s) for %s", conn.name, e.code, e.message, kind)
        if e.code in TERMINAL:
            conn.reconnect_now(f"subscription ended by error {e.code}")
            return
        if not isinstance(cmd, Cmd):
            return
        if kind == "global":
            self._global_refused(conn, cmd, e.code)
        elif cmd.sub is not None:
            self._subscription_refused(conn, cmd, cmd.sub, e)

    def _global_refused(self, conn: WsConnection, cmd: Cmd, code: int) -> None:
        """A global channel's subscribe refused: an optional channel the exchange lacks is noted; a timeout or the
        command rate limit is retried in a second."""
        if code == WsError.UNKNOWN_CHANNEL and cmd.channel in OPTIONAL_CHANNELS:
            self.states[conn].unsupported.add(cmd.channel or "")
            log.warning("%s: the exchange does not offer %s", conn.name, cmd.channel)
        elif code in (WsError.COMMAND_TIMEOUT, WsError.COMMAND_RATE_LIMIT):
            self.background.later(1.0, lambda: conn.send("subscribe", cmd.params or {}, cmd))

    def _subscription_refused(self, conn: WsConnection, cmd: Cmd, sub: Subscription, e: ErrorMsg) -> None:
        """An order-book command refused: by error code, then by what the command was for."""
        if e.code == WsError.UNKNOWN_SID:
            if cmd.kind in ("snapshot", "probe", "add", "delete"):
                conn.reconnect_now(f"the exchange forgot sid {sub.sid} of {sub.name}")
        elif e.code == WsError.COMMAND_TIMEOUT:
            self._timed_out(conn, cmd, sub)
        elif cmd.kind in ("subscribe", "add"):
            self._placement_refused(conn, cmd, sub, e)
        elif cmd.kind == "snapshot" and e.code == WsError.INVALID_PARAMETER and e.market_ticker:
            rest = [t for t in cmd.tickers if t != e.market_ticker]
            self.request_snapshots(sub, [t for t in rest if t in sub.tickers])

    def _timed_out(self, conn: WsConnection, cmd: Cmd, sub: Subscription) -> None:
        """A command timed out: sent again, for only the markets it still concerns (a subscribe: with backoff, and
        after ``subscribe_retries`` the connection is reopened)."""
        later = self.background.later
        if cmd.kind == "subscribe":
            sub.subscribing = False
            sub.retries += 1
            if sub.retries > self.settings.subscribe_retries:
                conn.reconnect_now(f"subscribe of {sub.name} timed out {sub.retries} times")
            else:
                later(min(MAX_RETRY_DELAY_S, 0.25 * 2**sub.retries), lambda: self._subscribe(sub))
        elif cmd.kind == "add":  # only markets still placed there
            later(0.5, lambda: self._update(sub, "add_markets", [t for t in cmd.tickers if t in sub.tickers], "add"))
        elif cmd.kind == "delete":  # only markets not placed back meanwhile
            later(
                0.5,
                lambda: self._update(sub, "delete_markets", [t for t in cmd.tickers if t not in sub.tickers], "delete"),
            )
        elif cmd.kind == "snapshot":
            later(0.5, lambda: self.request_snapshots(sub, [t for t in cmd.tickers if t in sub.tickers]))

    def _placement_refused(self, conn: WsConnection, cmd: Cmd, sub: Subscription, e: ErrorMsg) -> None:
        """A subscribe or add_markets refused: the rate limit (retried in a second), a market the exchange does not
        know (removed, reported, the rest retried), too many markets (error 26: :meth:`_too_many`)."""
        if e.code == WsError.COMMAND_RATE_LIMIT:
            sub.subscribing = False
            self.background.later(1.0, lambda: self._retry(cmd))
        elif e.code == WsError.MARKET_NOT_FOUND and e.market_ticker:
            sub.subscribing = False
            self.remove_markets([e.market_ticker])
            if self.on_unknown_market is not None:
                self.on_unknown_market(e.market_ticker)
            self.background.later(0.0, lambda: self._retry(cmd))
        elif e.code == WsError.TOO_MANY_MARKETS:
            sub.subscribing = False
            self._too_many(conn, sub, cmd)

    def _retry(self, cmd: Cmd) -> Any:
        sub = cmd.sub
        if sub is None:
            return None
        if cmd.kind == "subscribe" or not sub.active:
            return self._subscribe(sub)
        return self._update(sub, "add_markets", [t for t in cmd.tickers if t in sub.tickers], "add")

    def _too_many(self, conn: WsConnection, sub: Subscription, cmd: Cmd) -> None:
        """Error 26. A fresh subscription larger than any accepted so far (or alone on its connection) lowers the
        per-subscription cap and splits. Otherwise a sid is full: a merged sid caps its connection at what it holds
        (Kalshi merges repeat subscribes), an own sid caps subscriptions at its size; the refused markets are placed
        elsewhere (or stay unplaced, which /health reports)."""
        assert self.shards is not None
        shards = self.shards
        others = self._others(conn, sub)
        refused = [t for t in cmd.tickers if t in sub.tickers]
        if cmd.kind == "subscribe" and (others == 0 or len(cmd.tickers) > shards.largest_ok):
            shards.split(sub)
            for s in list(shards.subs[conn]):
                if not s.active and s.tickers:
                    self.spawn(self._subscribe(s))
            over = shards.load[conn] - shards.conn_capacity(conn)
            if over > 0:
                excess = [t for s in reversed(shards.subs[conn]) if not s.active for t in sorted(s.tickers)][:over]
                self._replace(excess)
            return
        ss = self.states[conn].sids.get(sub.sid) if sub.sid is not None else None
        shared = ss is not None and any(s is not sub for s in ss.subs)
        if cmd.kind == "subscribe" or shared:
            shards.limit_conn(conn, others + (len(sub.tickers) - len(refused) if sub.active else 0))
        else:
            shards.cap = max(1, min(shards.cap, len(sub.tickers) - len(refused)))
        self._replace(refused)

    def _replace(self, tickers: list[str]) -> None:
        """Move markets out of their subscription and place them again (elsewhere if their connection is full)."""
        assert self.shards is not None
        for t in tickers:
            sub = self.shards.sub_of.get(t)
            if sub is not None:
                self.shards.evict(sub, [t])
                if sub.window is not None:
                    self.windows.resynced(sub, [t], now_us())
                if not sub.tickers and not sub.active:
                    self.shards.drop_sub(sub)
            self.sync.forget(t)
        self.add_markets(tickers)

    def _others(self, conn: WsConnection, sub: Subscription) -> int:
        assert self.shards is not None
        return sum(len(s.tickers) for s in self.shards.subs[conn] if s.active and s is not sub)
