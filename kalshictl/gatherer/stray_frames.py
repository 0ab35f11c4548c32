"""The overlap rule (docs/gatherer.md "Placement: one market, one subscription"): a market's order-book frames are
its own only from the sid of the subscription it is placed on; a frame from any other sid, or on a sid that carries
none of the gatherer's subscriptions, is dropped and counted and the stray removed at the exchange. A market placed
nowhere is its own only on the sid it was removed from lately (its last frames in flight)."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from kalshictl.gatherer.router_state import Background, Cmd, ConnStates, LogLimiter, RouterStats, SidState

if TYPE_CHECKING:
    from kalshictl.gatherer.connections import WsConnection
    from kalshictl.gatherer.metrics import GathererMetrics
    from kalshictl.gatherer.shards import Shards

LEFT_SIDS_KEPT = 10_000  # removed markets whose last sid is remembered (their frames in flight are accepted)

log = logging.getLogger("kalshictl.gatherer.router")


class StrayFrames:
    """Decides whether an order-book frame belongs to the placement; removes strays (once per sid and market)."""

    def __init__(
        self,
        states: ConnStates,
        stats: RouterStats,
        metrics: GathererMetrics,
        background: Background,
        on_unknown_frame: Callable[[str], None] | None,
    ) -> None:
        self.states = states
        self.stats = stats
        self.metrics = metrics
        self.background = background
        self.on_unknown_frame = on_unknown_frame  # order-book frames of a market placed nowhere: place it
        self.shards: Shards | None = None  # the placement, once attached
        # where each market removed lately was placed (its sid None: not acknowledged yet): its last frames in flight
        # are still its own (bounded)
        self.left_sid: OrderedDict[str, tuple[WsConnection, int | None]] = OrderedDict()
        self._log = LogLimiter()

    def attach(self, shards: Shards) -> None:
        self.shards = shards

    def removed(self, markets: Iterable[tuple[str, WsConnection, int | None]]) -> None:
        """Markets leave their subscriptions: remember (ticker, connection, sid) for their frames still in flight."""
        left = self.left_sid
        for t, conn, sid in markets:
            left[t] = (conn, sid)
            left.move_to_end(t)
        while len(left) > LEFT_SIDS_KEPT:
            left.popitem(last=False)

    def placed(self, ticker: str) -> None:
        """A market is placed (again): its frames are judged by its new subscription."""
        self.left_sid.pop(ticker, None)

    def orphan(self, conn: WsConnection, ss: SidState) -> bool:
        """A frame of a sid that carries none of our subscriptions (unsubscribed, or a duplicate subscription): its
        data would be a second copy of a stream, so it is dropped, and the sid is unsubscribed (once)."""
        if self.shards is None or ss.subs:
            return False
        self.stats.orphan_frames += 1
        self.metrics.stray_frames.inc()
        st = self.states[conn]
        sid = ss.tracker.sid
        if (sid, None) not in st.strays_removed:
            st.strays_removed.add((sid, None))
            log.warning(
                "%s: frames on sid %d, which carries none of our subscriptions: unsubscribing it", conn.name, sid
            )
            self.background.spawn(self.unsubscribe_sid(conn, sid))
        return True

    async def unsubscribe_sid(self, conn: WsConnection, sid: int) -> None:
        """Unsubscribe a sid; its frames still in flight are dropped without a resend."""
        self.states[conn].strays_removed.add((sid, None))
        await conn.send("unsubscribe", {"sids": [sid]}, Cmd("unsubscribe"))

    def not_left_here(self, conn: WsConnection, ss: SidState, ticker: str) -> bool:
        """A frame of a market placed nowhere: True (dropped) unless the market was removed lately from this sid —
        or from a subscription of this connection not yet acknowledged — whose last frames are still its own."""
        left = self.left_sid.get(ticker)
        if left is None:
            self._unknown(conn, ss, ticker)
            return True
        left_conn, left_sid = left
        if left_conn is conn and left_sid in (None, ss.tracker.sid):
            return False
        self.stray(conn, ss, ticker)
        return True

    def _unknown(self, conn: WsConnection, ss: SidState, ticker: str) -> None:
        """An order-book frame of a market placed nowhere (and not one removed a moment ago, whose last frames come
        from its old sid): dropped and counted, and the market is learned through the one placement
        (``on_unknown_frame``). Placed on this very sid, its later frames are its own; placed elsewhere, this sid's
        copy becomes a stray (:meth:`stray`)."""
        self.stats.stray_frames += 1
        self.metrics.stray_frames.inc()
        if self._log.ok(f"unknown:{conn.name}"):
            log.warning("%s: %s arrived on sid %d but is placed nowhere: placing it", conn.name, ticker, ss.tracker.sid)
        if self.on_unknown_frame is not None:
            self.on_unknown_frame(ticker)

    def stray(self, conn: WsConnection, ss: SidState, ticker: str) -> None:
        """An order-book frame of a market from a sid it is not placed on (a second subscription of it, or its old
        sid while it moves): a second copy of its stream, so it is dropped and counted, and the market is deleted
        from that sid (once per sid and connection)."""
        self.stats.stray_frames += 1
        self.metrics.stray_frames.inc()
        st = self.states[conn]
        sid = ss.tracker.sid
        if (sid, ticker) in st.strays_removed:
            return
        st.strays_removed.add((sid, ticker))
        if self._log.ok(f"stray:{conn.name}"):
            log.warning("%s: %s arrived on sid %d, where it is not placed: deleting it there", conn.name, ticker, sid)
        shards = self.shards
        for sub in ss.subs:  # the placement's own bookkeeping holds the market there too: heal it
            if ticker in sub.tickers and shards is not None and shards.sub_of.get(ticker) is not sub:
                sub.tickers.discard(ticker)
                shards.load[sub.conn] -= 1
        params = {"sids": [sid], "action": "delete_markets", "market_tickers": [ticker]}
        self.background.spawn(conn.send("update_subscription", params, Cmd("stray", tickers=[ticker])))
