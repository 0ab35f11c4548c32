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
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from kalshictl.config import WebSocketSettings
from kalshictl.gatherer.book_frames import BookFrames
from kalshictl.gatherer.gap_detection import GapDetection
from kalshictl.gatherer.gaps import GapLog
from kalshictl.gatherer.global_channels import GlobalChannels
from kalshictl.gatherer.occurrence import OccurrenceCounter
from kalshictl.gatherer.router_state import (
    GAP_CLOCK_SLACK_US,
    GLOBAL_CHANNELS,
    ORDERBOOK,
    Cmd,
    ConnState,
    ConnStates,
    LogLimiter,
)
from kalshictl.gatherer.sequence import BookDigest, MarketSync
from kalshictl.gatherer.subscription_commands import SubscriptionCommands
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

if TYPE_CHECKING:
    from kalshictl.gatherer.connections import ConnectionPool, WsConnection
    from kalshictl.gatherer.metrics import GathererMetrics
    from kalshictl.gatherer.shards import Shards
    from kalshictl.gatherer.writers import WriterSet

log = logging.getLogger("kalshictl.gatherer.router")

LifecycleFn = Callable[[Lifecycle], Awaitable[None]]


async def _no_database() -> Any:
    raise RuntimeError("this router has no gap database")


class Router(SubscriptionCommands, GapDetection, BookFrames, GlobalChannels):
    """Dispatches parsed records; owns subscriptions' exchange state, sequence/resync state and numbering.

    Its parts live in their own modules: commands and replies (:mod:`~kalshictl.gatherer.subscription_commands`),
    sequence verdicts and coverage windows (:mod:`~kalshictl.gatherer.gap_detection`), order-book frames
    (:mod:`~kalshictl.gatherer.book_frames`), global channels (:mod:`~kalshictl.gatherer.global_channels`); the
    state they share is :mod:`~kalshictl.gatherer.router_state`'s.
    """

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
        self.on_unknown_frame: Callable[[str], None] | None = None  # order-book frames of a market placed nowhere
        # where each market removed lately was placed (its sid None: not acknowledged yet): its last frames in flight
        # are still its own (bounded)
        self.left_sid: OrderedDict[str, tuple[WsConnection, int | None]] = OrderedDict()
        self.states: dict[WsConnection, ConnState] = ConnStates()
        self._tasks: set[asyncio.Task] = set()
        self._log = LogLimiter()
        self.msg_counts = metrics.messages.counts  # frames per type: plain ints, published to Prometheus at scrape time
        self.snapshot_requested: dict[str, float] = {}
        self.dropped_resync = 0
        self.tail_gaps = 0  # losses revealed by a seq probe's ack (incl. ambiguous acks resolved later)
        self.digest_mismatches = 0  # losses revealed by a snapshot that disagreed with the held book
        self.ambiguous_acks = 0
        self.rest_suspects = 0  # REST books of quiet markets that disagreed with the held book (re-checked by WS)
        self.no_ts_deltas = 0
        self.orphan_frames = 0
        self.stray_frames = 0  # a market's order-book frames from a sid it is not placed on (dropped)
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
        self.life_occurrences = lifecycle_key.Occurrences()  # identical lifecycle messages in a burst: 0, 1, 2 …
        # the heartbeat never passes a possibly undetected loss
        self.gaplog.coverage_floors.append(self.verified_through_us)

    # ----- wiring -----------------------------------------------------------------------------------------------------
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

    # ----- helpers ----------------------------------------------------------------------------------------------------
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

    # ----- connection callbacks ---------------------------------------------------------------------------------------
    def on_open(self, conn: WsConnection) -> None:
        """A connection (re)opened: subscribe what it should carry."""
        st = self.states[conn]
        st.sids.clear()
        st.channel_sid.clear()
        st.strays_removed.clear()
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

    def forget_market(self, ticker: str) -> None:
        self.sync.forget(ticker)
        self.digest.drop(ticker)
        self.occ.forget(ticker)
        self.snapshot_requested.pop(ticker, None)
        for fields, _c, _last, rx in self._pending_snaps.pop(ticker, []):
            self._store_snapshot(fields, rx)

    # ----- entry point ------------------------------------------------------------------------------------------------
    def handle(self, conn: WsConnection, raw: str | bytes, rx: int) -> None:
        """Handle one text frame received at ``rx`` (µs); never raises."""
        counts = self.msg_counts
        rec = None
        try:
            rec = self.parser.parse(raw)
            match rec:
                case OrderbookDelta():
                    counts["orderbook_delta"] += 1
                    self._delta(conn, rec, rx)
                case TickerUpdate():
                    counts["ticker"] += 1
                    self._seen(conn, rec.exchange_ts)
                    self._ticker(rec, rx)
                case Trade():
                    counts["trade"] += 1
                    self._seen(conn, rec.exchange_ts)
                    self._trade(rec, rx)
                case OrderbookSnapshot():
                    counts["orderbook_snapshot"] += 1
                    self._snapshot(conn, rec, rx)
                case Lifecycle():
                    counts[rec.event_type if rec.event_type == "event_lifecycle" else "market_lifecycle_v2"] += 1
                    self._lifecycle(rec, rx)
                case FeeUpdate():
                    counts["event_fee_update"] += 1
                    self._lifecycle(rec, rx)  # stored as a lifecycle row, event_type 'event_fee_update'
                case ParseError():
                    self._parse_error(rec)
                case Subscribed():
                    counts["subscribed"] += 1
                    self._subscribed(conn, rec, rx)
                case ErrorMsg():
                    counts["error"] += 1
                    self._error(conn, rec)
                case Ack():
                    counts[rec.type] += 1
                    self._ack(conn, rec, rx)
        except Exception:  # a routing bug must not kill the connection's read loop
            log.exception("router: failed to handle a %s", type(rec).__name__)
        n_unknown = self.parser.unknown_total
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

    # ----- status -----------------------------------------------------------------------------------------------------
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
