"""Sharding = subscriptions: every order-book market is placed in one subscription of one connection.

A connection holds up to ``subscriptions_per_connection`` order-book subscriptions of at most ``cap`` markets each
(``markets_per_subscription``, lowered when the exchange answers error 26). Capacity is therefore computed, not
guessed: ``connections × subscriptions_per_connection × cap`` (less any connection whose merged sid the exchange
capped). Markets that do not fit are *unplaced*, which the gatherer's /health reports as unhealthy.

This module is bookkeeping only (no I/O): the router sends the commands that make the exchange match it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kalshictl.gatherer.connections import WsConnection

log = logging.getLogger("kalshictl.gatherer.shards")


@dataclass(eq=False)
class SubscriptionWindow:
    """A subscription's open coverage window (its row in ``sequence_gaps``): the markets still awaiting a snapshot.

    A window opens once per subscription per gap (a seq gap of its sid, a disconnect, an error that ended it); a second
    gap while it is open re-adds markets to it when the row covers them (``from_ts``, ``covered``). Each market
    resyncs on its own fresh snapshot (one that left the subscription counts as resynced); the window closes, once, at
    the time the last of them resynced.
    """

    window_id: int
    reason: str
    awaiting: set[str] = field(default_factory=set)
    last_resync: int = 0
    from_ts: int = 0  # the row's start
    covered: frozenset[str] = frozenset()  # the markets the row names


@dataclass(eq=False)
class Subscription:
    """One order-book subscription as the gatherer wants it (``tickers``) and as the exchange acknowledged it."""

    name: str  # stable, e.g. "ob-017/2"
    conn: WsConnection
    tickers: set[str] = field(default_factory=set)
    sid: int | None = None  # the exchange's sid once ``subscribed`` (shared with siblings when subscribes merge)
    subscribing: Any = False  # a subscribe is in flight (its attempt's token)
    window: SubscriptionWindow | None = None
    retries: int = 0

    def __repr__(self) -> str:
        return f"Subscription({self.name}, {len(self.tickers)} markets, sid={self.sid})"

    @property
    def active(self) -> bool:
        return self.sid is not None


class Shards:
    """Placement of markets into subscriptions over the order-book connections."""

    def __init__(self, conns: list[WsConnection], cap: int, subs_per_conn: int) -> None:
        self.conns = conns
        self.cap_config = cap
        self.cap = cap  # learned: lowered by error 26 on a fresh subscription
        self.subs_per_conn = subs_per_conn
        self.subs: dict[WsConnection, list[Subscription]] = {c: [] for c in conns}
        self.load: dict[WsConnection, int] = dict.fromkeys(conns, 0)
        self.conn_limit: dict[WsConnection, int] = {}  # learned: the exchange capped a merged sid at this many
        self.sub_of: dict[str, Subscription] = {}
        self.unplaced: set[str] = set()
        self.largest_ok = 0  # the largest subscription the exchange accepted in one subscribe
        self._next: dict[WsConnection, int] = dict.fromkeys(conns, 0)

    # ----- capacity -------------------------------------------------------------------------------------------
    def conn_capacity(self, conn: WsConnection) -> int:
        cap = self.subs_per_conn * self.cap
        limit = self.conn_limit.get(conn)
        return cap if limit is None else min(cap, limit)

    @property
    def capacity(self) -> int:
        return sum(self.conn_capacity(c) for c in self.conns)

    @property
    def placed(self) -> int:
        return len(self.sub_of)

    def all_subs(self) -> Iterable[Subscription]:
        for subs in self.subs.values():
            yield from subs

    # ----- placement ------------------------------------------------------------------------------------------
    def _sub_with_room(self, conn: WsConnection) -> Subscription:
        for sub in self.subs[conn]:
            if len(sub.tickers) < self.cap:
                return sub
        k = self._next[conn]
        self._next[conn] = k + 1
        sub = Subscription(f"{conn.name}/{k}", conn)
        self.subs[conn].append(sub)
        return sub

    def place(self, tickers: Iterable[str]) -> dict[Subscription, list[str]]:
        """Place new markets (balanced over connections, each within its capacity); returns additions per
        subscription. Markets that fit nowhere are added to :attr:`unplaced`. Idempotent: a market already placed,
        or named twice (a listing that names a market on two pages), is placed once."""
        todo = [t for t in dict.fromkeys(tickers) if t not in self.sub_of]
        added: dict[Subscription, list[str]] = {}
        if not todo:
            return added
        open_conns = sorted((c for c in self.conns if self.load[c] < self.conn_capacity(c)), key=self.load.__getitem__)
        i = 0
        current: dict[WsConnection, Subscription] = {}
        for t in todo:
            while open_conns:
                conn = open_conns[i % len(open_conns)]
                if self.load[conn] < self.conn_capacity(conn):
                    break
                open_conns.remove(conn)
            else:
                self.unplaced.add(t)
                continue
            i += 1
            sub = current.get(conn)
            if sub is None or len(sub.tickers) >= self.cap:
                sub = current[conn] = self._sub_with_room(conn)
            sub.tickers.add(t)
            self.sub_of[t] = sub
            self.load[conn] += 1
            self.unplaced.discard(t)
            added.setdefault(sub, []).append(t)
        return added

    def remove(self, tickers: Iterable[str]) -> dict[Subscription, list[str]]:
        """Take markets out of their subscriptions (slots freed); returns removals per subscription."""
        removed: dict[Subscription, list[str]] = {}
        for t in tickers:
            self.unplaced.discard(t)
            sub = self.sub_of.pop(t, None)
            if sub is None:
                continue
            sub.tickers.discard(t)
            self.load[sub.conn] -= 1
            removed.setdefault(sub, []).append(t)
        return removed

    def evict(self, sub: Subscription, tickers: list[str]) -> None:
        """Markets the exchange would not take into ``sub``: out of it (the caller re-places them)."""
        for t in tickers:
            if self.sub_of.get(t) is sub:
                del self.sub_of[t]
                sub.tickers.discard(t)
                self.load[sub.conn] -= 1

    def drop_sub(self, sub: Subscription) -> None:
        subs = self.subs[sub.conn]
        if sub in subs and not sub.tickers:
            subs.remove(sub)

    def split(self, sub: Subscription) -> Subscription | None:
        """Error 26 on a fresh subscription: lower the learned cap below its size and move the excess into a new
        sibling subscription on the same connection (or out, to be re-placed, when the connection is full)."""
        n = len(sub.tickers)
        new_cap = max(1, n // 2)
        if new_cap < self.cap:
            log.warning("the exchange refused %d markets in one subscription: per-subscription cap now %d", n, new_cap)
            self.cap = new_cap
        excess = sorted(sub.tickers)[self.cap :]
        self.evict(sub, excess)
        return None if not excess else self._resub(sub.conn, excess)

    def _resub(self, conn: WsConnection, tickers: list[str]) -> Subscription | None:
        sub = None
        for t in tickers:
            if sub is None or len(sub.tickers) >= self.cap:
                k = self._next[conn]
                self._next[conn] = k + 1
                sub = Subscription(f"{conn.name}/{k}", conn)
                self.subs[conn].append(sub)
            sub.tickers.add(t)
            self.sub_of[t] = sub
            self.load[conn] += 1
        return sub

    def limit_conn(self, conn: WsConnection, held: int) -> None:
        """Error 26 on a subscribe that would merge into the connection's sid: that sid holds at most ``held``."""
        old = self.conn_limit.get(conn)
        if old is None or held < old:
            log.warning("%s: the exchange caps its merged order-book subscription at %d markets", conn.name, held)
            self.conn_limit[conn] = held
