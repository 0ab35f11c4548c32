"""The narrow interface between Kalshi's WebSocket protocol layer (ws.py, connection.py) and the world it serves.

The protocol layer parses commands, keeps sids and seqs, answers acks and errors and queues frames; *what* is
happening in the markets comes from a world. ``SimExchange`` is the generated world; ``kalshictl.replay`` serves a
recorded one (production) through the same protocol code, so a client cannot tell them apart (docs/replay.md).

Every member is read-only here, so a world may hold a more specific type (``Feed``, ``FaultInjector``, ``SimConfig``).
``K`` is the world's key of a market: the generated world's universe index, the recorded world's ticker.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import TYPE_CHECKING, Protocol, TypeVar

if TYPE_CHECKING:
    from aiohttp import web

    from kalshictl.sim.connection import Connections
    from kalshictl.sim.stats import Stats
    from kalshictl.sim.subscriptions import Sub


K = TypeVar("K", bound=Hashable)
K_contra = TypeVar("K_contra", bound=Hashable, contravariant=True)


class SubscriptionFeed(Protocol[K_contra]):
    """Routes a world's events to subscriptions and sends orderbook snapshots (``kalshictl.sim.feed.Feed``)."""

    def register(self, sub: Sub) -> None: ...
    def unregister(self, sub: Sub) -> None: ...
    def add_tickers(self, sub: Sub, tickers: set[str] | list[str]) -> None: ...
    def remove_tickers(self, sub: Sub, tickers: set[str] | list[str]) -> None: ...
    def snapshot(self, sub: Sub, key: K_contra, consume: bool = True) -> None:
        """Send ``sub`` an ``orderbook_snapshot`` of the market ``key`` (from :meth:`CommandWorld.market_key`)."""
        ...


class CommandOptions(Protocol):
    """The protocol options commands follow (``kalshictl.sim.config.SimConfig``; docs/sim.md "Kalshi fidelity")."""

    @property
    def ack_seq(self) -> str: ...
    @property
    def snapshot_seq(self) -> str: ...
    @property
    def repeat_subscribe(self) -> str: ...
    @property
    def max_markets_per_sub(self) -> int: ...


class ConnectionOptions(CommandOptions, Protocol):
    """Per-connection settings besides the command options."""

    @property
    def ws_buffer_bytes(self) -> int: ...
    @property
    def heartbeat_s(self) -> float: ...


class CommandFaults(Protocol):
    """The command-level fault a world may inject (``kalshictl.sim.faults.FaultInjector``)."""

    def roll_cmd_timeout(self) -> bool: ...


class ConnectionFaults(CommandFaults, Protocol):
    """Besides command faults: refusing new connections (an outage)."""

    def should_refuse(self) -> bool: ...


class CommandWorld(Protocol[K]):
    """What one connection's :class:`~kalshictl.sim.ws.CommandHandler` needs from the world."""

    @property
    def cfg(self) -> CommandOptions: ...
    @property
    def feed(self) -> SubscriptionFeed[K]: ...
    @property
    def faults(self) -> CommandFaults: ...
    def market_key(self, ticker: str) -> K | None:
        """The world's key of market ``ticker`` (passed back to ``feed.snapshot``), or None if it does not exist."""
        ...


class World(CommandWorld[K], Protocol[K]):
    """What the WebSocket endpoint (:func:`~kalshictl.sim.ws.handle_ws`) needs from the world behind it."""

    @property
    def cfg(self) -> ConnectionOptions: ...
    @property
    def faults(self) -> ConnectionFaults: ...
    @property
    def counters(self) -> Stats: ...
    @property
    def connections(self) -> Connections: ...
    @property
    def public_key(self) -> object:
        """Not None: private channels are allowed (the client is authenticated)."""
        ...

    def check_auth(self, request: web.Request, method: str, path: str) -> str | None:
        """None if the request may proceed, else the reason to reject it with 401."""
        ...
