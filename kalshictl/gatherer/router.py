"""The router: the connections' frame handler. It parses each frame and dispatches the record to the part that owns
its state, and it wires those parts together (docs/gatherer.md "Modules"):

* :class:`~kalshictl.gatherer.gap_detection.GapDetector`: per-sid seq verdicts and the ack rule, returning the
  losses found as :class:`~kalshictl.gatherer.gap_detection.Gap`;
* :class:`~kalshictl.gatherer.book_frames.BookFrames`: per-market book state, a delta in, a row or nothing out;
* :class:`~kalshictl.gatherer.subscription_commands.SubscriptionCommands`: the commands that keep the exchange's
  subscriptions equal to the placement in :mod:`kalshictl.gatherer.shards`, and the exchange's replies;
* :class:`~kalshictl.gatherer.coverage_windows.CoverageWindows`: the gap log's windows per subscription and channel;
* :class:`~kalshictl.gatherer.stray_frames.StrayFrames`: the overlap rule (a market's frames only from its sid);
* :class:`~kalshictl.gatherer.global_channels.GlobalChannels`: trade, ticker and lifecycle rows.

The state they share is declared in :mod:`~kalshictl.gatherer.router_state` and handed to each in its constructor.
Sequence state is per sid (every market of a subscription shares one stream). Under "merge" repeat-subscribe
semantics several of a connection's subscriptions share one sid; under "new_sid" each has its own. Either way every
sid maps to the subscriptions it carries, so a gap re-snapshots exactly those, each ``get_snapshot`` goes to the
sid its market is in, and each subscription's coverage window closes when its last market resynced.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from kalshictl.config import WebSocketSettings
from kalshictl.gatherer.book_frames import BookFrames
from kalshictl.gatherer.coverage_windows import CoverageWindows
from kalshictl.gatherer.gap_detection import Gap, GapDetector
from kalshictl.gatherer.global_channels import GlobalChannels, LifecycleFn
from kalshictl.gatherer.router_state import (
    GLOBAL_CHANNELS,
    ORDERBOOK,
    Background,
    ConnState,
    ConnStates,
    LogLimiter,
    RouterStats,
)
from kalshictl.gatherer.sequence import BookDigest, MarketSync
from kalshictl.gatherer.stray_frames import StrayFrames
from kalshictl.gatherer.subscription_commands import SubscriptionCommands
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
from kalshictl.units import now_us

if TYPE_CHECKING:
    from kalshictl.gatherer.connections import WsConnection
    from kalshictl.gatherer.gaps import GapLog
    from kalshictl.gatherer.metrics import GathererMetrics
    from kalshictl.gatherer.shards import Shards
    from kalshictl.gatherer.writers import WriterSet

log = logging.getLogger("kalshictl.gatherer.router")


class Connections(Protocol):
    """What the router takes from the connection pool: its global and order-book connections."""

    @property
    def global_conns(self) -> Sequence[WsConnection]: ...

    @property
    def book_conns(self) -> Sequence[WsConnection]: ...


class Router:
    """Dispatches parsed records to the parts that own their state (see the module docstring)."""

    def __init__(
        self,
        name: str,
        writers: WriterSet,
        metrics: GathererMetrics,
        gaplog: GapLog,
        settings: WebSocketSettings | None = None,
        *,
        on_lifecycle: LifecycleFn | None = None,
        on_unknown_market: Callable[[str], object] | None = None,
        on_unknown_frame: Callable[[str], None] | None = None,
    ) -> None:
        self.name = name
        self.writers = writers  # where the rows go (the parts hold the table writers they add to)
        self.metrics = metrics
        self.gaplog = gaplog
        self.settings = settings = settings or WebSocketSettings.model_validate({})  # the defaults
        self.parser = Parser(use_yes_price=bool(settings.use_yes_price))
        self.states = states = ConnStates()
        self.stats = stats = RouterStats()
        self.sync = sync = MarketSync()  # which markets' books are trusted: read by /status and /health
        self.background = background = Background()
        self.pool: Connections | None = None
        self.shards: Shards | None = None
        digest = BookDigest()
        snapshot_requested: dict[str, float] = {}
        w = writers.by_table
        self.detector = detector = GapDetector(states, stats, metrics, settings)
        self.windows = windows = CoverageWindows(gaplog, sync, digest)
        self.strays = strays = StrayFrames(states, stats, metrics, background, on_unknown_frame)
        self.book = book = BookFrames(
            states,
            stats,
            metrics,
            sync=sync,
            digest=digest,
            snapshot_requested=snapshot_requested,
            detector=detector,
            strays=strays,
            windows=windows,
            record_gap=self._record_gap,
            deltas=w["orderbook_deltas"],
            snapshots=w["orderbook_snapshots"],
        )
        self.commands = commands = SubscriptionCommands(
            states,
            stats,
            metrics,
            settings,
            background,
            sync=sync,
            snapshot_requested=snapshot_requested,
            windows=windows,
            strays=strays,
            forget_market=book.forget,
            on_unknown_market=on_unknown_market,
        )
        self.channels = GlobalChannels(
            states, stats, background, w["trades"], w["tickers"], w["lifecycle_events"], on_lifecycle
        )
        # the surface the service calls, served by the parts
        self.add_markets = commands.add_markets
        self.remove_markets = commands.remove_markets
        self.request_snapshots = commands.request_snapshots
        self.retry_stale_snapshots = commands.retry_stale_snapshots
        self.probe = commands.probe
        self.probe_all = commands.probe_all
        self.flush_pending_snapshots = book.flush_pending_snapshots
        self.record_late = windows.record_late
        self.verified_through_us = detector.verified_through_us
        gaplog.coverage_floors.append(detector.verified_through_us)  # the heartbeat never passes a possible loss
        self.msg_counts = metrics.messages.counts  # frames per type: plain ints, published to Prometheus at scrape time
        self._unknown_seen = 0
        self._log = LogLimiter()
        self._delta, self._snapshot = book.delta, book.snapshot
        self._trade, self._ticker, self._lifecycle = self.channels.trade, self.channels.ticker, self.channels.lifecycle

    # ----- wiring -----------------------------------------------------------------------------------------------------
    def attach(self, pool: Connections, shards: Shards) -> None:
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
        self.detector.attach(pool.book_conns)
        self.commands.attach(shards, pool.book_conns)
        for part in (self.windows, self.strays, self.book):
            part.attach(shards)

    def conn_healthy(self, conn: WsConnection) -> bool:
        """Alive, and every subscription it should hold is acknowledged (the pool's ``is_healthy``)."""
        if not conn.alive:
            return False
        st = self.states[conn]
        if conn.kind == "global":
            return all(ch in st.channel_sid for ch in st.required())
        assert self.shards is not None
        return all(sub.active for sub in self.shards.subs[conn] if sub.tickers)

    # ----- connection callbacks ---------------------------------------------------------------------------------------
    def on_open(self, conn: WsConnection) -> None:
        """A connection (re)opened: subscribe what it should carry."""
        st = self.states[conn]
        st.sids.clear()
        st.channel_sid.clear()
        st.strays_removed.clear()
        self.commands.resubscribe(conn, st)

    def on_close(self, conn: WsConnection) -> None:
        """A connection dropped: its waiting snapshots are anchored and a coverage window opens for every
        subscription it carried."""
        self.book.anchor_pending(conn)
        self.windows.disconnected(conn, self.states[conn])

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
                    self._ticker(conn, rec, rx)
                case Trade():
                    counts["trade"] += 1
                    self._trade(conn, rec, rx)
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
                    self.commands.on_subscribed(conn, rec, rx)
                case ErrorMsg():
                    counts["error"] += 1
                    self.commands.on_error(conn, rec)
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

    def _ack(self, conn: WsConnection, a: Ack, rx: int) -> None:
        """The command it answers is done (commands); its seq is read by the ack rule (detector)."""
        cmd = self.commands.on_ack(conn, a)
        if a.sid is None or a.seq is None:
            return
        probe = cmd is not None and cmd.kind == "probe"
        for gap in self.detector.ack(conn, a, a.sid, a.seq, probe, rx):
            self._record_gap(gap)

    def _record_gap(self, gap: Gap) -> None:
        """Every market of the sid's subscriptions is untrusted until its fresh snapshot arrives: the connection's
        waiting snapshots are anchored, a window opens per subscription and its snapshots are requested."""
        conn, ss = gap.conn, gap.sid_state
        if self._log.ok(f"gap:{conn.name}"):
            n = sum(len(s.tickers) for s in ss.subs)
            msg = "%s sid %d: %s (expected %s, got %s): re-snapshotting %d markets"
            log.warning(msg, conn.name, ss.tracker.sid, gap.reason, gap.expected, gap.got, n)
        self.book.anchor_pending(conn)
        for sub in ss.subs:
            self.windows.open(
                sub, gap.reason, gap.from_ts, gap.rx, sid=ss.tracker.sid, expected=gap.expected, received=gap.got
            )
            self.commands.request_snapshots(sub, sorted(sub.tickers))

    def verify_book(self, ticker: str, yes: list[tuple[int, int]], no: list[tuple[int, int]], asked_rx: int) -> None:
        """A REST book of a market: if its sid was quiet since before the request and the held book differs, ask the
        exchange for a stream-ordered snapshot (which settles it)."""
        sub = self.book.suspect(ticker, yes, no, asked_rx)
        if sub is not None:
            self.commands.request_snapshots(sub, [ticker])

    def _parse_error(self, err: ParseError) -> None:
        self.stats.parse_errors += 1
        self.metrics.parse_errors.labels(kind=err.kind).inc()
        if self._log.ok(f"parse:{err.kind}"):
            log.warning("bad frame (%s, type=%s): %s", err.kind, err.msg_type, err.detail)

    # ----- status -----------------------------------------------------------------------------------------------------
    @property
    def last_exchange_ts(self) -> int:
        """The latest exchange time seen on any connection (µs; 0 before any)."""
        return self.stats.last_exchange_ts

    def untrusted_longer_than(self, seconds: float) -> int:
        """Markets without a trusted book for longer than ``seconds``."""
        cutoff = now_us() - int(seconds * 1_000_000)
        return sum(1 for since in self.sync.awaiting.values() if since < cutoff)

    def resync_quantile(self, q: float) -> float | None:
        """A quantile (0..1) of how long markets stayed untrusted after a gap, in seconds (recent 100,000)."""
        if not self.stats.resync_us:
            return None
        xs = sorted(self.stats.resync_us)
        return xs[min(len(xs) - 1, int(q * len(xs)))] / 1e6

    def ack_modes(self) -> dict[str, int]:
        out: dict[str, int] = {}
        if self.pool is not None:
            for c in self.pool.book_conns:
                m = self.states[c].ack_mode
                out[m] = out.get(m, 0) + 1
        return out

    def open_windows(self) -> int:
        return self.windows.open_count(self.states.values())

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
