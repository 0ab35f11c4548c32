"""The narrow interface between Kalshi's WebSocket protocol layer (ws.py, connection.py) and the world it serves.

The protocol layer parses commands, keeps sids and seqs, answers acks and errors and queues frames; *what* is
happening in the markets comes from a world. ``SimExchange`` is the generated world; ``kalshictl.replay`` serves a
recorded one (production) through the same protocol code, so a client cannot tell them apart (docs/replay.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from aiohttp import web

    from kalshictl.sim.config import SimConfig
    from kalshictl.sim.connection import Connection
    from kalshictl.sim.feed import Sub
    from kalshictl.sim.stats import Stats


class Subscriptions(Protocol):
    """Routes a world's events to subscriptions and sends orderbook snapshots (``kalshictl.sim.feed``)."""

    def register(self, sub: Sub) -> None: ...
    def unregister(self, sub: Sub) -> None: ...
    def add_tickers(self, sub: Sub, tickers: set[str] | list[str]) -> None: ...
    def remove_tickers(self, sub: Sub, tickers: set[str] | list[str]) -> None: ...
    def snapshot(self, sub: Sub, key: Any, consume: bool = True) -> None: ...


class Faults(Protocol):
    """The protocol-level faults a world may inject (``kalshictl.sim.faults.FaultInjector``)."""

    def roll_cmd_timeout(self) -> bool: ...
    def should_refuse(self) -> bool: ...


class World(Protocol):
    """What the WebSocket protocol layer needs from the world behind it."""

    cfg: SimConfig  # protocol options: ack_seq, snapshot_seq, repeat_subscribe, max_markets_per_sub, buffers, heartbeat
    feed: Subscriptions
    faults: Faults
    counters: Stats
    connections: dict[int, Connection]
    public_key: Any  # not None: private channels are allowed (the client is authenticated)

    def market_key(self, ticker: str) -> Any | None:
        """The world's key of market ``ticker`` (passed back to ``feed.snapshot``), or None if it does not exist."""
        ...

    def next_connection_id(self) -> int: ...
    def check_auth(self, request: web.Request, method: str, path: str) -> str | None: ...
