"""The router's state of the exchange's subscriptions: per connection (its sids, ack reading, global channels) and
per sid (its seq stream and the subscriptions it carries), the pending commands' purposes, and the constants shared
by the router's parts (:mod:`~kalshictl.gatherer.router`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kalshictl.gatherer.sequence import ACK_UNKNOWN, SeqTracker

if TYPE_CHECKING:
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
        self.strays_removed: set[tuple[int, str | None]] = set()  # (sid, market) a stray removal was sent for

    def required(self) -> list[str]:
        return [c for c in self.channels if c not in self.unsupported]


class ConnStates(dict):
    """Router state per connection; a connection the router was not attached to (a bench's bare socket) gets one."""

    def __missing__(self, conn: Any) -> ConnState:
        st = self[conn] = ConnState((ORDERBOOK,) if getattr(conn, "kind", "orderbook") == "orderbook" else ())
        return st
