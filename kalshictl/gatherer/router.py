"""The router: the connections' frame handler. It owns the subscriptions' exchange state (sid, seq, windows), sends
the commands that keep the exchange's subscriptions equal to the placement in :mod:`kalshictl.gatherer.shards`,
enforces the sequence/resync rules and hands rows to the table writers.

Sequence state is per sid (every market of a subscription shares one stream). Under "merge" repeat-subscribe
semantics several of a connection's subscriptions share one sid; under "new_sid" each has its own. Either way every
sid maps to the subscriptions it carries, so a gap re-snapshots exactly those, each ``get_snapshot`` goes to the
sid its market is in, and each subscription's coverage window closes when its last market resynced.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from kalshictl.config import WebSocketSettings
from kalshictl.gatherer.gaps import GapLog
from kalshictl.gatherer.occurrence import OccurrenceCounter
from kalshictl.gatherer.sequence import (
    ACK_LAST,
    ACK_UNKNOWN,
    GAP,
    OK,
    BookDigest,
    MarketSync,
    SeqTracker,
    ack_verdict,
    book_digest,
)
from kalshictl.gatherer.shards import SubscriptionWindow
from kalshictl.gatherer.writers import now_us
from kalshictl.kalshi import lifecycle_key
from kalshictl.kalshi.messages import (
    Ack,
    ErrorMsg,
    FeeUpdate,
    Lifecycle,
    OrderbookDelta,
    OrderbookSnapshot,
    ParseError,
    Parser,
    Subscribed,
    TickerUpdate,
    Trade,
)
from kalshictl.kalshi.ws_codes import TERMINAL, WsError
from kalshictl.units import PRICE_MAX

if TYPE_CHECKING:
    from kalshictl.gatherer.connections import ConnectionPool, WsConnection
    from kalshictl.gatherer.metrics import GathererMetrics
    from kalshictl.gatherer.shards import Shards, Subscription
    from kalshictl.gatherer.writers import WriterSet

GAP_CLOCK_SLACK_US = 1_000_000  # exchange vs gatherer clock allowance when a gap's start is a receive time
ORDERBOOK = "orderbook_delta"
GLOBAL_CHANNELS = ("ticker", "trade", "market_lifecycle_v2", "multivariate_market_lifecycle")
OPTIONAL_CHANNELS = frozenset(("multivariate_market_lifecycle",))  # an exchange without it is not unhealthy
SNAPSHOT_CHUNK = 200  # tickers per get_snapshot / add / delete command
MAX_RETRY_DELAY_S = 8.0
NOTE_MAX_AGE_US = 300_000_000  # an ambiguous ack older than this no longer dates a loss found by the book digest

log = logging.getLogger("kalshictl.gatherer.router")

LifecycleFn = Callable[[Lifecycle], Awaitable[None]]


async def _no_database() -> Any:
    raise RuntimeError("this router has no gap database")


def book_row_fields(yes: list[tuple[int, int]], no: list[tuple[int, int]]) -> tuple[str, str, str, str, Any, Any, Any]:
    """JSONB level arrays and best bid/ask/spread of a book given as YES and NO bids (ascending, own-leg prices)."""
    yes_asks = sorted((PRICE_MAX - p, s) for p, s in no)
    no_asks = sorted((PRICE_MAX - p, s) for p, s in yes)
    best_bid = yes[-1][0] if yes else None
    best_ask = PRICE_MAX - no[-1][0] if no else None
    spread = best_ask - best_bid if best_bid is not None and best_ask is not None else None
    dump = orjson.dumps
    return (
        dump(yes).decode(),
        dump(yes_asks).decode(),
        dump(no).decode(),
        dump(no_asks).decode(),
        best_bid,
        best_ask,
        spread,
    )


class _LogLimiter:
    """At most one log line per key per ``every`` seconds (bad input must not flood the log)."""

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self._last: dict[str, float] = {}

    def ok(self, key: str) -> bool:
        now = time.monotonic()
        if now - self._last.get(key, 0.0) >= self.every:
            self._last[key] = now
            return True
        return False


@dataclass(slots=True)
class Cmd:
    """What a pending command was for (kept in ``conn.pending`` under its id)."""

    kind: str  # subscribe | add | delete | snapshot | probe | unsubscribe | global
    sub: Subscription | None = None
    tickers: list[str] = field(default_factory=list)
    channel: str | None = None
    params: dict[str, Any] | None = None


@dataclass(slots=True)
class Note:
    """An ack at last+1 while the connection's ack reading is unknown: a lost tail frame if the reading is "last"."""

    from_ts: int
    rx: int
    expected: int
    received: int


class SidState:
    """One sid of a connection: its seq stream and the subscriptions it carries."""

    __slots__ = ("channel", "last_rx", "last_ts", "note", "subs", "tracker", "verified")

    def __init__(self, sid: int, channel: str) -> None:
        self.tracker = SeqTracker(sid)
        self.channel = channel
        self.subs: list[Subscription] = []
        self.note: Note | None = None
        self.last_rx = 0  # receive time of the last frame in sequence
        self.last_ts = 0  # exchange time of the last delta in sequence
        self.verified = 0  # a time up to which this sid's stream is known complete (0: nothing received yet)


class ConnState:
    """The router's state of one connection (kept across its reconnects; sids reset on each)."""

    def __init__(self, channels: tuple[str, ...]) -> None:
        self.channels = channels
        self.sids: dict[int, SidState] = {}
        self.ack_mode = ACK_UNKNOWN
        self.last_exchange_ts = 0
        self.last_in_sequence_rx = 0
        self.channel_sid: dict[str, int] = {}
        self.global_windows: dict[str, int] = {}
        self.unsupported: set[str] = set()

    def required(self) -> list[str]:
        return [c for c in self.channels if c not in self.unsupported]


class _States(dict):
    """Router state per connection; a connection the router was not attached to (a bench's bare socket) gets one."""

    def __missing__(self, conn: Any) -> ConnState:
        st = self[conn] = ConnState((ORDERBOOK,) if getattr(conn, "kind", "orderbook") == "orderbook" else ())
        return st


class Router:
    """Dispatches parsed records; owns subscriptions' exchange state, sequence/resync state and numbering."""

    def __init__(
        self,
        name: str,
        writers: WriterSet,
        metrics: GathererMetrics,
        gaplog: GapLog | None = None,
        settings: WebSocketSettings | None = None,
    ) -> None:
        self.name = name
        self.writers = writers
        self.metrics = metrics
        if gaplog is None:  # the service passes its log; a bare router (bench) keeps windows in memory only
            found = writers.by_table.get("sequence_gaps")
            gaplog = found if isinstance(found, GapLog) else GapLog(name, _no_database, metrics=metrics)
        self.gaplog = gaplog
        settings = settings or WebSocketSettings()
        self.settings = settings
        self.use_yes_price = bool(settings.use_yes_price)
        self.parser = Parser(use_yes_price=self.use_yes_price)
        self.sync = MarketSync()
        self.digest = BookDigest()
        self.occ = OccurrenceCounter()
        self.pool: ConnectionPool | None = None
        self.shards: Shards | None = None
        self.on_lifecycle: LifecycleFn | None = None
        self.on_unknown_market: Callable[[str], None] | None = None
        self.states: dict[WsConnection, ConnState] = _States()
        self._tasks: set[asyncio.Task] = set()
        self._log = _LogLimiter()
        self._msg_counters: dict[str, Any] = {}
        self.snapshot_requested: dict[str, float] = {}
        self.dropped_resync = 0
        self.tail_gaps = 0  # losses revealed by a seq probe's ack (incl. ambiguous acks resolved later)
        self.digest_mismatches = 0  # losses revealed by a snapshot that disagreed with the held book
        self.ambiguous_acks = 0
        self.rest_suspects = 0  # REST books of quiet markets that disagreed with the held book (re-checked by WS)
        self.no_ts_deltas = 0
        self.orphan_frames = 0
        self.probe_replies = 0  # acks and errors answering seq probes
        self.resync_us: deque[int] = deque(maxlen=100_000)  # how long markets stayed untrusted after a gap
        # WS snapshots wait for their anchor: ticker -> [(row fields, conn, last exchange ts at receipt, rx)]
        self._pending_snaps: dict[str, list[tuple[tuple, WsConnection, int, int]]] = {}
        self.parse_errors = 0
        self.duplicates = 0
        self.last_exchange_ts = 0
        self._unknown_seen = 0
        w = writers.by_table
        self._deltas = w["orderbook_deltas"]
        self._snaps = w["orderbook_snapshots"]
        self._trades = w["trades"]
        self._tickers = w["tickers"]
        self._life = w["lifecycle_events"]
        self.gaplog.coverage_floor = self.verified_through_us  # the heartbeat never passes a possibly undetected loss

    # ----- wiring ---------------------------------------------------------------------------------------------
    def attach(self, pool: ConnectionPool, shards: Shards) -> None:
        """Take the pool's connections (global channels dealt round-robin) and the placement."""
        self.pool = pool
        self.shards = shards
        n = len(pool.global_conns)
        chans: list[list[str]] = [[] for _ in range(n)]
        for i, ch in enumerate(GLOBAL_CHANNELS if n else ()):
            chans[i % n].append(ch)
        for i in range(len(GLOBAL_CHANNELS), n):  # more connections than channels: carry channels twice
            chans[i].append(GLOBAL_CHANNELS[i % len(GLOBAL_CHANNELS)])
        for conn, cs in zip(pool.global_conns, chans, strict=True):
            self.states[conn] = ConnState(tuple(cs))
        for conn in pool.book_conns:
            self.states[conn] = ConnState((ORDERBOOK,))
        pool.is_healthy = self.conn_healthy

    def conn_healthy(self, conn: WsConnection) -> bool:
        """Alive, and every subscription it should hold is acknowledged."""
        if not conn.alive:
            return False
        st = self.states[conn]
        if conn.kind == "global":
            return all(ch in st.channel_sid for ch in st.required())
        assert self.shards is not None
        return all(sub.active for sub in self.shards.subs[conn] if sub.tickers)

    # ----- helpers --------------------------------------------------------------------------------------------
    def _count(self, mtype: str) -> None:
        c = self._msg_counters.get(mtype)
        if c is None:
            c = self._msg_counters[mtype] = self.metrics.messages.labels(type=mtype)
        c.inc()

    def spawn(self, coro: Awaitable[Any]) -> None:
        """Run a command coroutine in the background (kept referenced until done)."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _later(self, delay: float, fn: Callable[[], Any]) -> None:
        async def run() -> None:
            await asyncio.sleep(delay)
            res = fn()
            if asyncio.iscoroutine(res):
                await res

        self.spawn(run())

    # ----- commands -------------------------------------------------------------------------------------------
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

    async def _unsubscribe_sid(self, conn: WsConnection, sid: int) -> None:
        await conn.send("unsubscribe", {"sids": [sid]}, Cmd("unsubscribe"))

    def add_markets(self, tickers: Iterable[str]) -> int:
        """Place new markets and subscribe them (a live subscription gets ``add_markets``; a new one ``subscribe``).
        Returns how many were placed."""
        assert self.shards is not None
        rx = now_us()
        added = self.shards.place(tickers)
        for sub, ts in added.items():
            for t in ts:
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
        removed = self.shards.remove(tickers)
        for t in tickers:
            self.forget_market(t)
        for sub, ts in removed.items():
            if sub.window is not None:
                self._resynced(sub, ts, now_us())
            if sub.sid is None:
                continue
            st = self.states[sub.conn].sids.get(sub.sid)
            shared = st is not None and any(s is not sub for s in st.subs)
            if not sub.tickers and not shared:
                sid, sub.sid = sub.sid, None
                if st is not None:
                    st.subs.remove(sub)
                self.shards.drop_sub(sub)
                self.spawn(self._unsubscribe_sid(sub.conn, sid))
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
        if self.pool is None:
            return 0
        return sum(self.probe(c) for c in self.pool.book_conns if c.bucket.tokens >= min_tokens)

    # ----- connection callbacks -------------------------------------------------------------------------------
    def on_open(self, conn: WsConnection) -> None:
        """A connection (re)opened: subscribe what it should carry."""
        st = self.states[conn]
        st.sids.clear()
        st.channel_sid.clear()
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

    def on_close(self, conn: WsConnection) -> None:
        """A connection dropped: open a coverage window for every subscription it carried."""
        st = self.states[conn]
        self._anchor_pending(conn)
        rx = now_us()
        from_ts = st.last_exchange_ts or (st.last_in_sequence_rx or rx) - GAP_CLOCK_SLACK_US
        if conn.kind == "orderbook":
            assert self.shards is not None
            for sub in self.shards.subs[conn]:
                sid = sub.sid
                sub.sid = None
                sub.subscribing = False
                if sub.tickers:
                    # a tail loss on its sid not yet found may predate the connection's last frame
                    ss = st.sids.get(sid) if sid is not None else None
                    start = min(from_ts, self._from_ts(st, ss, rx)) if ss is not None else from_ts
                    self._open_window(sub, "disconnect", start, rx, sid=sid)
        else:
            for ch in st.channels:
                if ch not in st.global_windows and ch not in st.unsupported:
                    st.global_windows[ch] = self.gaplog.open(
                        channel=ch,
                        reason="disconnect",
                        from_ts=from_ts,
                        subscription=f"{conn.name}/{ch}",
                        sid=st.channel_sid.get(ch),
                    )
        st.sids.clear()
        st.channel_sid.clear()

    # ----- windows --------------------------------------------------------------------------------------------
    def _open_window(
        self,
        sub: Subscription,
        reason: str,
        from_ts: int,
        rx: int,
        *,
        sid: int | None = None,
        expected: int | None = None,
        received: int | None = None,
        tickers: Iterable[str] | None = None,
    ) -> None:
        """One window per subscription per gap; a gap while one is open re-adds markets to it."""
        markets = set(sub.tickers if tickers is None else tickers)
        if not markets:
            return
        for t in markets:
            self.sync.invalidate(t, rx)
            self.digest.drop(t)
        if sub.window is not None:
            sub.window.awaiting |= markets
            return
        wid = self.gaplog.open(
            channel=ORDERBOOK,
            reason=reason,
            from_ts=from_ts,
            subscription=sub.name,
            sid=sid if sid is not None else sub.sid,
            tickers=sorted(markets),
            expected_seq=expected,
            received_seq=received,
        )
        sub.window = SubscriptionWindow(wid, reason, markets)

    def _resynced(self, sub: Subscription, tickers: Iterable[str], ts: int) -> None:
        w = sub.window
        if w is None:
            return
        for t in tickers:
            w.awaiting.discard(t)
        w.last_resync = max(w.last_resync, ts)
        if not w.awaiting:
            self.gaplog.close(w.window_id, w.last_resync)
            sub.window = None

    def forget_market(self, ticker: str) -> None:
        self.sync.forget(ticker)
        self.digest.drop(ticker)
        self.occ.forget(ticker)
        self.snapshot_requested.pop(ticker, None)
        for fields, _c, _last, rx in self._pending_snaps.pop(ticker, []):
            self._store_snapshot(fields, rx)

    # ----- entry point ----------------------------------------------------------------------------------------
    def handle(self, conn: WsConnection, raw: str | bytes, rx: int) -> None:
        """Handle one text frame received at ``rx`` (µs); never raises."""
        rec = self.parser.parse(raw)
        try:
            match rec:
                case OrderbookDelta():
                    self._count("orderbook_delta")
                    self._delta(conn, rec, rx)
                case TickerUpdate():
                    self._count("ticker")
                    self._seen(conn, rec.exchange_ts)
                    self._ticker(rec, rx)
                case Trade():
                    self._count("trade")
                    self._seen(conn, rec.exchange_ts)
                    self._trade(rec, rx)
                case OrderbookSnapshot():
                    self._count("orderbook_snapshot")
                    self._snapshot(conn, rec, rx)
                case Lifecycle():
                    self._count(rec.event_type if rec.event_type == "event_lifecycle" else "market_lifecycle_v2")
                    self._lifecycle(rec, rx)
                case FeeUpdate():
                    self._count("event_fee_update")
                    self._lifecycle(rec, rx)  # stored as a lifecycle row, event_type 'event_fee_update'
                case ParseError():
                    self._parse_error(rec)
                case Subscribed():
                    self._count("subscribed")
                    self._subscribed(conn, rec, rx)
                case ErrorMsg():
                    self._count("error")
                    self._error(conn, rec)
                case Ack():
                    self._count(rec.type)
                    self._ack(conn, rec, rx)
        except Exception:  # a routing bug must not kill the connection's read loop
            log.exception("router: failed to handle a %s", type(rec).__name__)
        n_unknown = sum(self.parser.unknown_fields.values())
        if n_unknown != self._unknown_seen:
            self.metrics.unknown_fields.inc(n_unknown - self._unknown_seen)
            if self._log.ok("unknown"):
                log.warning("unknown message fields seen: %s", dict(self.parser.unknown_fields.most_common(5)))
            self._unknown_seen = n_unknown

    def _seen(self, conn: WsConnection, ts: int | None) -> None:
        st = self.states[conn]
        if ts and ts > st.last_exchange_ts:
            st.last_exchange_ts = ts
            if ts > self.last_exchange_ts:
                self.last_exchange_ts = ts

    def _parse_error(self, err: ParseError) -> None:
        self.parse_errors += 1
        self.metrics.parse_errors.labels(kind=err.kind).inc()
        if self._log.ok(f"parse:{err.kind}"):
            log.warning("bad frame (%s, type=%s): %s", err.kind, err.msg_type, err.detail)

    # ----- order book -----------------------------------------------------------------------------------------
    def _sid(self, conn: WsConnection, sid: int, channel: str = ORDERBOOK) -> SidState:
        st = self.states[conn]
        ss = st.sids.get(sid)
        if ss is None:
            ss = st.sids[sid] = SidState(sid, channel)
        return ss

    def _seq(self, conn: WsConnection, ss: SidState, verdict: str, prev: int | None, seq: int | None, rx: int) -> bool:
        """Act on a data frame's verdict; False = drop the frame (duplicate)."""
        match verdict:
            case "ok":
                self.states[conn].last_in_sequence_rx = rx
                ss.last_rx = rx
                return True
            case "duplicate":
                self.duplicates += 1
                self.metrics.duplicates.inc()
                return False
            case _:
                reason = "seq_gap" if verdict == GAP else "seq_backwards"
                self._sequence_broken(conn, ss, reason, None if prev is None else prev + 1, seq, rx)
                ss.last_rx = rx
                return True

    def _ack(self, conn: WsConnection, a: Ack, rx: int) -> None:
        cmd = conn.pending.pop(a.id, None) if a.id is not None else None
        if isinstance(cmd, Cmd) and cmd.kind == "probe":
            self.probe_replies += 1
        if a.sid is None:
            return
        if isinstance(cmd, Cmd) and cmd.kind == "subscribe" and cmd.sub is not None:
            self._sub_acked(conn, cmd, a.sid)  # a repeat subscribe merged into an existing sid ("merge")
        elif isinstance(cmd, Cmd) and cmd.kind == "add":
            self._expect_snapshots(cmd.tickers)
        if a.seq is None:
            return
        st = self.states[conn]
        ss = st.sids.get(a.sid)
        if ss is None:
            return
        before = ss.tracker.last
        verdict, ambiguous, mode = ack_verdict(ss.tracker, a.seq, st.ack_mode)
        if mode != st.ack_mode:
            st.ack_mode = mode
            log.info('%s: acks carry the sid\'s last data seq ("last" reading proven)', conn.name)
            self._resolve_notes(conn, rx)
        if a.type == "unsubscribed":
            st.sids.pop(a.sid, None)
            return
        if verdict == OK:
            # nothing lost up to the ack (an ambiguous one keeps its note, which bounds the floor below)
            ss.verified = max(ss.verified, rx - GAP_CLOCK_SLACK_US)
        if verdict == GAP:
            self.tail_gaps += 1
            self.metrics.tail_gaps.labels(how="ack").inc()
            self._sequence_broken(conn, ss, "seq_gap", None if before is None else before + 1, a.seq, rx)
        elif ambiguous:
            self.ambiguous_acks += 1
            if ss.note is None or rx - ss.note.rx > NOTE_MAX_AGE_US:  # "last" proves itself long before this
                ss.note = Note(self._from_ts(st, ss, rx), rx, (before or 0) + 1, a.seq)
        elif verdict == OK and cmd is not None and cmd.kind == "probe":
            ss.note = None if st.ack_mode == ACK_LAST else ss.note

    def _resolve_notes(self, conn: WsConnection, rx: int) -> None:
        """The connection proved "last": every earlier ack at last+1 meant one lost tail frame."""
        st = self.states[conn]
        for ss in list(st.sids.values()):
            note, ss.note = ss.note, None
            if note is None:
                continue
            self.tail_gaps += 1
            self.metrics.tail_gaps.labels(how="ack_resolved").inc()
            self._sequence_broken(conn, ss, "seq_gap", note.expected, note.received, rx, from_ts=note.from_ts)

    def _sequence_broken(
        self,
        conn: WsConnection,
        ss: SidState,
        reason: str,
        expected: int | None,
        seq: int | None,
        rx: int,
        *,
        from_ts: int | None = None,
    ) -> None:
        """Every market of the sid's subscriptions is untrusted until its fresh snapshot arrives."""
        st = self.states[conn]
        n = sum(len(s.tickers) for s in ss.subs)
        if self._log.ok(f"gap:{conn.name}"):
            log.warning(
                "%s sid %d: %s (expected %s, got %s): re-snapshotting %d markets",
                conn.name,
                ss.tracker.sid,
                reason,
                expected,
                seq,
                n,
            )
        if from_ts is None:
            from_ts = self._from_ts(st, ss, rx)
        self._anchor_pending(conn)
        for sub in ss.subs:
            self._open_window(sub, reason, from_ts, rx, sid=ss.tracker.sid, expected=expected, received=seq)
            self.request_snapshots(sub, sorted(sub.tickers))

    @staticmethod
    def _from_ts(st: ConnState, ss: SidState, rx: int) -> int:
        """Where a window of this sid starts: lost frames were sent after the last frame received in sequence *on
        this sid* — the exchange time of its last delta, or (none yet) that frame's receive time less a clock slack.
        (Another sid's later frames say nothing about this one's tail.)"""
        if ss.last_ts:
            return ss.last_ts
        return (ss.last_rx or st.last_in_sequence_rx or rx) - GAP_CLOCK_SLACK_US

    def _orphan(self, ss: SidState) -> bool:
        """A frame of a sid that carries none of our subscriptions (unsubscribed, or a duplicate subscription): its
        data would be a second copy of a stream, so it is dropped."""
        if self.shards is None or ss.subs:
            return False
        self.orphan_frames += 1
        return True

    def _delta(self, conn: WsConnection, d: OrderbookDelta, rx: int) -> None:
        ss = self._sid(conn, d.sid)
        if self._orphan(ss):
            return
        prev = ss.tracker.last
        if not self._seq(conn, ss, ss.tracker.check(d.seq), prev, d.seq, rx):
            return
        ts = d.exchange_ts
        if ts is None:  # ts_ms is optional in the AsyncAPI: the receive time stands in (docs/gatherer.md)
            ts = rx
            self.no_ts_deltas += 1
        st = self.states[conn]
        if ss.last_ts > ss.verified:
            ss.verified = ss.last_ts  # this frame arrived in sequence: everything the sid sent before it did too
        if ts > ss.last_ts:
            ss.last_ts = ts
        if ts > st.last_exchange_ts:
            st.last_exchange_ts = ts
            if ts > self.last_exchange_ts:
                self.last_exchange_ts = ts
        pending = self._pending_snaps.pop(d.ticker, None)
        if pending is not None:
            for fields, _conn, _last, _rx in pending:
                self._store_snapshot(fields, ts - 1)  # every delta after the snapshot is at or after ts
        self.digest.apply(d.ticker, d.side, d.price, d.size_delta)
        occurrence = self.occ.next(d.ticker, ts, d.side, d.price, d.size_delta)
        if not self.sync.accept_delta(d.ticker, ts):
            self.dropped_resync += 1
            return
        self._deltas.add((ts, rx, d.ticker, d.side, d.price, d.size_delta, occurrence, d.seq, d.sid))

    def _snapshot(self, conn: WsConnection, s: OrderbookSnapshot, rx: int) -> None:
        ss = self._sid(conn, s.sid)
        if self._orphan(ss):
            return
        prev = ss.tracker.last
        if not self._seq(conn, ss, ss.tracker.check_snapshot(s.seq), prev, s.seq, rx):
            return
        st = self.states[conn]
        cut = max(rx, st.last_exchange_ts)
        digest = book_digest(s.yes, s.no)
        held = self.digest.get(s.ticker)
        sub = self.shards.sub_of.get(s.ticker) if self.shards is not None else None
        if held is not None and held != digest and s.ticker not in self.sync.awaiting and sub is not None:
            # the held book disagrees with the exchange's: a delta was lost without a seq trace (a tail frame)
            self.digest_mismatches += 1
            self.metrics.tail_gaps.labels(how="digest").inc()
            note = ss.note
            from_ts = note.from_ts if note is not None else cut - 60_000_000
            self._open_window(sub, "seq_gap", from_ts, rx, sid=s.sid, tickers=[s.ticker])
        if sub is not None:
            self.digest.set(s.ticker, digest)
        self.snapshot_requested.pop(s.ticker, None)
        since = self.sync.on_snapshot(s.ticker, cut)
        if since is not None and sub is not None:
            w = sub.window
            if w is not None and s.ticker in w.awaiting and isinstance(since, int):
                self.resync_us.append(rx - since)  # untrusted time after a gap (not a first snapshot)
            self._resynced(sub, (s.ticker,), cut)
        fields = (rx, s.ticker, "ws", *book_row_fields(s.yes, s.no), s.sid, s.seq)
        self._pending_snaps.setdefault(s.ticker, []).append((fields, conn, st.last_exchange_ts, rx))

    def verify_book(self, ticker: str, yes: list[tuple[int, int]], no: list[tuple[int, int]], asked_rx: int) -> None:
        """A REST book of a market: if its sid was quiet since before the request and the held book differs, ask the
        exchange for a stream-ordered snapshot (which settles it: see :meth:`_snapshot`)."""
        if self.shards is None:
            return
        held = self.digest.get(ticker)
        sub = self.shards.sub_of.get(ticker)
        if held is None or sub is None or sub.sid is None or ticker in self.sync.awaiting:
            return
        ss = self.states[sub.conn].sids.get(sub.sid)
        if ss is None or ss.last_rx >= asked_rx - 2_000_000:
            return  # frames in flight: the REST book may be ahead of the stream
        if book_digest(yes, no) != held:
            self.rest_suspects += 1
            self.metrics.tail_gaps.labels(how="rest_suspect").inc()
            self.request_snapshots(sub, [ticker])

    # A WebSocket snapshot carries no exchange time. Its exact place in the exchange's history is known from the
    # stream: every later delta of the market comes after it. So the row is held until the market's next delta
    # arrives and stored with exchange_ts = that delta's time - 1 µs (``book`` applies deltas with exchange_ts >
    # anchor). If no delta follows within ``SNAPSHOT_ANCHOR_WAIT_S`` the receive time is a safe anchor (a later delta
    # is generated after it). After a sequence gap the last exchange time seen before the snapshot is used.
    SNAPSHOT_ANCHOR_WAIT_S = 2.0

    def _store_snapshot(self, fields: tuple, anchor: int | None) -> None:
        rx, ticker, source, *rest = fields
        self._snaps.add((rx, anchor, ticker, source, *rest))

    def _anchor_pending(self, conn: WsConnection) -> None:
        for ticker in [t for t, items in self._pending_snaps.items() if any(c is conn for _, c, _, _ in items)]:
            keep = []
            for fields, c, last, rx in self._pending_snaps.pop(ticker):
                if c is conn:
                    self._store_snapshot(fields, min(last, rx) if last else None)
                else:
                    keep.append((fields, c, last, rx))
            if keep:
                self._pending_snaps[ticker] = keep

    def flush_pending_snapshots(self, now: int, *, force: bool = False) -> int:
        """Store snapshots no delta followed within the anchor wait (all of them with ``force``); returns how many."""
        wait_us = int(self.SNAPSHOT_ANCHOR_WAIT_S * 1_000_000)
        stored = 0
        for ticker in list(self._pending_snaps):
            due: list = []
            rest: list = []
            for item in self._pending_snaps[ticker]:
                (due if force or now - item[3] >= wait_us else rest).append(item)
            for fields, _c, _last, rx in due:
                self._store_snapshot(fields, rx)
                stored += 1
            if rest:
                self._pending_snaps[ticker] = rest
            else:
                del self._pending_snaps[ticker]
        return stored

    # ----- global channels ------------------------------------------------------------------------------------
    def _trade(self, t: Trade, rx: int) -> None:
        self._trades.add(
            (t.trade_id, t.exchange_ts, rx, t.ticker, t.price, t.size, t.taker_side, t.is_block_trade, "ws", t.sid)
        )

    def _ticker(self, u: TickerUpdate, rx: int) -> None:
        self._tickers.add(
            (
                u.exchange_ts,
                rx,
                u.ticker,
                u.yes_bid,
                u.yes_ask,
                u.last_price,
                u.volume,
                u.open_interest,
                u.dollar_volume,
                u.dollar_open_interest,
                u.yes_bid_size,
                u.yes_ask_size,
                u.last_trade_size,
                "ws",
                u.sid,
            )
        )

    def _lifecycle(self, ev: Lifecycle | FeeUpdate, rx: int) -> None:
        # The message's own time when it has one, else the receive time; never a future time (lifecycle messages
        # carry no ts; created/activated carry a close_ts in the future).
        payload = orjson.dumps(ev.payload).decode()
        ts, dig = lifecycle_key.key_fields(ev.event_type, ev.ticker, ev.payload, ev.exchange_ts, rx)
        self._life.add((ts, rx, ev.ticker, ev.event_type, payload, dig, ev.sid))
        if self.on_lifecycle is not None and ev.event_type not in ("event_lifecycle", "event_fee_update"):
            self.spawn(self.on_lifecycle(ev))

    # ----- control --------------------------------------------------------------------------------------------
    def _subscribed(self, conn: WsConnection, s: Subscribed, rx: int) -> None:
        cmd = conn.pending.pop(s.id, None) if s.id is not None else None
        st = self.states[conn]
        if not isinstance(cmd, Cmd):
            return
        match cmd.kind:
            case "global":
                st.channel_sid[s.channel] = s.sid
                self._sid(conn, s.sid, s.channel)
                wid = st.global_windows.pop(s.channel, None)
                if wid is not None:
                    self.gaplog.close(wid, rx)
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
            self.spawn(self._unsubscribe_sid(conn, sid))
            return
        ss = self._sid(conn, sid)
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

    def _error(self, conn: WsConnection, e: ErrorMsg) -> None:
        cmd = conn.pending.pop(e.id, None) if e.id else None
        kind = cmd.kind if isinstance(cmd, Cmd) else "-"
        if kind == "probe":
            self.probe_replies += 1
        if self._log.ok(f"err:{e.code}:{kind}"):
            log.warning("%s: exchange error %d (%s) for %s", conn.name, e.code, e.message, kind)
        if e.code in TERMINAL:
            conn.reconnect_now(f"subscription ended by error {e.code}")
            return
        if not isinstance(cmd, Cmd):
            return
        sub = cmd.sub
        match (kind, e.code):
            case ("global", WsError.UNKNOWN_CHANNEL) if cmd.channel in OPTIONAL_CHANNELS:
                self.states[conn].unsupported.add(cmd.channel or "")
                log.warning("%s: the exchange does not offer %s", conn.name, cmd.channel)
            case ("global", WsError.COMMAND_TIMEOUT | WsError.COMMAND_RATE_LIMIT):
                self._later(1.0, lambda: conn.send("subscribe", cmd.params or {}, cmd))
            case ("subscribe", WsError.COMMAND_TIMEOUT) if sub is not None:
                sub.subscribing = False
                sub.retries += 1
                if sub.retries > self.settings.subscribe_retries:
                    conn.reconnect_now(f"subscribe of {sub.name} timed out {sub.retries} times")
                else:
                    self._later(min(MAX_RETRY_DELAY_S, 0.25 * 2**sub.retries), lambda: self._subscribe(sub))
            case ("subscribe" | "add", WsError.COMMAND_RATE_LIMIT) if sub is not None:
                sub.subscribing = False
                self._later(1.0, lambda: self._retry(cmd))
            case ("subscribe" | "add", WsError.MARKET_NOT_FOUND) if sub is not None and e.market_ticker:
                sub.subscribing = False
                self.remove_markets([e.market_ticker])
                if self.on_unknown_market is not None:
                    self.on_unknown_market(e.market_ticker)
                self._later(0.0, lambda: self._retry(cmd))
            case ("subscribe" | "add", WsError.TOO_MANY_MARKETS) if sub is not None:
                sub.subscribing = False
                self._too_many(conn, sub, cmd)
            case ("add" | "delete", WsError.COMMAND_TIMEOUT) if sub is not None:
                action = "add_markets" if kind == "add" else "delete_markets"
                self._later(0.5, lambda: self._update(sub, action, [t for t in cmd.tickers], kind))
            case ("snapshot", WsError.COMMAND_TIMEOUT) if sub is not None:
                self._later(0.5, lambda: self.request_snapshots(sub, [t for t in cmd.tickers if t in sub.tickers]))
            case ("snapshot", WsError.INVALID_PARAMETER) if sub is not None and e.market_ticker:
                rest = [t for t in cmd.tickers if t != e.market_ticker]
                self.request_snapshots(sub, [t for t in rest if t in sub.tickers])
            case ("snapshot" | "probe" | "add" | "delete", WsError.UNKNOWN_SID) if sub is not None:
                conn.reconnect_now(f"the exchange forgot sid {sub.sid} of {sub.name}")

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
                    self._resynced(sub, [t], now_us())
                if not sub.tickers and not sub.active:
                    self.shards.drop_sub(sub)
            self.sync.forget(t)
        self.add_markets(tickers)

    def _others(self, conn: WsConnection, sub: Subscription) -> int:
        assert self.shards is not None
        return sum(len(s.tickers) for s in self.shards.subs[conn] if s.active and s is not sub)

    # ----- status ---------------------------------------------------------------------------------------------
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

    def verified_through_us(self, now: int) -> int:
        """A time before which no loss can still be undetected on a connected order-book sid (``now`` when there is
        none; a disconnected one has its windows recorded already): the coverage heartbeat's floor."""
        out = now
        if self.pool is None:
            return out
        # An ambiguous ack is a possible loss only until the next lossless probe proves "last" (one interval); a
        # note still unresolved after a few intervals means the exchange reads "own" and no longer holds the floor.
        note_window = int(3 * self.settings.seq_probe_interval_s * 1_000_000)
        for c in self.pool.book_conns:
            if not c.connected:
                continue
            for ss in self.states[c].sids.values():
                if not ss.verified or not any(sub.tickers for sub in ss.subs):
                    continue
                floor = ss.verified
                if ss.note is not None and now - ss.note.rx < note_window:
                    floor = min(floor, ss.note.from_ts)
                out = min(out, floor)
        return out

    def record_late(self, tickers: list[str], start: int) -> None:
        """Markets subscribed late (created or re-listed while the lifecycle channel was blind): their books from
        ``start`` until each one's first snapshot are an ``outage`` window of their subscription."""
        if self.shards is None:
            return
        rx = now_us()
        by_sub: dict[Subscription, list[str]] = {}
        for t in tickers:
            sub = self.shards.sub_of.get(t)
            if sub is not None and t in self.sync.awaiting:
                by_sub.setdefault(sub, []).append(t)
        for sub, ts in by_sub.items():
            self._open_window(sub, "outage", start, rx, tickers=ts)

    def untrusted_longer_than(self, seconds: float) -> int:
        """Markets without a trusted book for longer than ``seconds``."""
        cutoff = now_us() - int(seconds * 1_000_000)
        return sum(1 for since in self.sync.awaiting.values() if since < cutoff)

    def resync_quantile(self, q: float) -> float | None:
        """A quantile (0..1) of how long markets stayed untrusted after a gap, in seconds (recent 100,000)."""
        if not self.resync_us:
            return None
        xs = sorted(self.resync_us)
        return xs[min(len(xs) - 1, int(q * len(xs)))] / 1e6

    def ack_modes(self) -> dict[str, int]:
        out: dict[str, int] = {}
        if self.pool is not None:
            for c in self.pool.book_conns:
                m = self.states[c].ack_mode
                out[m] = out.get(m, 0) + 1
        return out

    def open_windows(self) -> int:
        if self.shards is None:
            return 0
        return sum(1 for s in self.shards.all_subs() if s.window is not None) + sum(
            len(st.global_windows) for st in self.states.values()
        )

    def sub_status(self, conn: WsConnection) -> list[dict[str, Any]]:
        if self.shards is None:
            return []
        st = self.states[conn]
        out = []
        for sub in self.shards.subs[conn]:
            ss = st.sids.get(sub.sid) if sub.sid is not None else None
            out.append(
                {
                    "name": sub.name,
                    "markets": len(sub.tickers),
                    "sid": sub.sid,
                    "seq": ss.tracker.last if ss is not None else None,
                    "window_open": sub.window is not None,
                }
            )
        return out
