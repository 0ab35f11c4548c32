"""The router's state of the exchange's subscriptions: per connection (its sids, ack reading, global channels) and
per sid (its seq stream and the subscriptions it carries), the pending commands' purposes, the router's counters, its
background commands, and the constants shared by the router's parts (:mod:`~kalshictl.gatherer.router`).

Nothing here acts on the exchange or the database: the parts receive these objects in their constructors.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kalshictl.gatherer.sequence import ACK_UNKNOWN, SeqTracker

if TYPE_CHECKING:
    from kalshictl.gatherer.connections import WsConnection
    from kalshictl.gatherer.shards import Subscription

GAP_CLOCK_SLACK_US = 1_000_000  # exchange vs gatherer clock allowance when a gap's start is a receive time
ORDERBOOK = "orderbook_delta"
GLOBAL_CHANNELS = ("ticker", "trade", "market_lifecycle_v2", "multivariate_market_lifecycle")
OPTIONAL_CHANNELS = frozenset(("multivariate_market_lifecycle",))  # an exchange without it is not unhealthy


class LogLimiter:
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


class Background:
    """Command coroutines run in the background, each kept referenced until done."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Future[Any]] = set()

    def spawn(self, coro: Awaitable[Any]) -> None:
        """Run a command coroutine in the background (kept referenced until done)."""
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def later(self, delay: float, fn: Callable[[], Any]) -> None:
        """Call ``fn`` after ``delay`` seconds (awaiting it if it returns a coroutine)."""

        async def run() -> None:
            await asyncio.sleep(delay)
            res = fn()
            if asyncio.iscoroutine(res):
                await res

        self.spawn(run())


@dataclass(slots=True)
class RouterStats:
    """The router's counters (plain ints, read by ``/status``; Prometheus has its own) and the latest exchange time
    seen on any connection."""

    parse_errors: int = 0
    duplicates: int = 0
    dropped_resync: int = 0  # deltas of untrusted markets (or at/before their snapshot's cut) not stored
    tail_gaps: int = 0  # losses revealed by a seq probe's ack (incl. ambiguous acks resolved later)
    digest_mismatches: int = 0  # losses revealed by a snapshot that disagreed with the held book
    ambiguous_acks: int = 0
    rest_suspects: int = 0  # REST books of quiet markets that disagreed with the held book (re-checked by WS)
    no_ts_deltas: int = 0
    orphan_frames: int = 0  # frames on a sid that carries none of the gatherer's subscriptions (dropped)
    stray_frames: int = 0  # a market's order-book frames from a sid it is not placed on (dropped)
    probe_replies: int = 0  # acks and errors answering seq probes
    last_exchange_ts: int = 0
    resync_us: deque[int] = field(default_factory=lambda: deque(maxlen=100_000))  # untrusted time after a gap


@dataclass(slots=True)
class Cmd:
    """What a pending command was for (kept in ``conn.pending`` under its id)."""

    kind: str  # subscribe | add | delete | snapshot | probe | unsubscribe | stray | global
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
        self.strays_removed: set[tuple[int, str | None]] = set()  # (sid, market) a stray removal was sent for

    def required(self) -> list[str]:
        return [c for c in self.channels if c not in self.unsupported]

    def sid_state(self, sid: int, channel: str = ORDERBOOK) -> SidState:
        """The state of one of this connection's sids (created at its first frame or acknowledgement)."""
        ss = self.sids.get(sid)
        if ss is None:
            ss = self.sids[sid] = SidState(sid, channel)
        return ss


class ConnStates(dict["WsConnection", ConnState]):
    """Router state per connection; a connection the router was not attached to (a bench's bare socket) gets one."""

    def __missing__(self, conn: WsConnection) -> ConnState:
        st = self[conn] = ConnState((ORDERBOOK,) if getattr(conn, "kind", "orderbook") == "orderbook" else ())
        return st


def window_start(st: ConnState, ss: SidState, rx: int) -> int:
    """Where a window of this sid starts: lost frames were sent after the last frame received in sequence *on this
    sid* — the exchange time of its last delta, or (none yet) that frame's receive time less a clock slack.
    (Another sid's later frames say nothing about this one's tail; docs/gatherer.md "Where a window starts".)"""
    if ss.last_ts:
        return ss.last_ts
    return (ss.last_rx or st.last_in_sequence_rx or rx) - GAP_CLOCK_SLACK_US
