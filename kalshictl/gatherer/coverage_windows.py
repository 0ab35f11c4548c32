"""The router's coverage windows (docs/gatherer.md "Gaps are data"): one window per subscription per gap, opened
when markets become untrusted and closed when the last of them resynced; per global channel, one window from a
disconnect until the resubscription's ack; a late-subscribed market's ``outage``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from kalshictl.gatherer.router_state import GAP_CLOCK_SLACK_US, ORDERBOOK, ConnState, window_start
from kalshictl.gatherer.sequence import BookDigest, MarketSync
from kalshictl.gatherer.shards import SubscriptionWindow
from kalshictl.units import now_us

if TYPE_CHECKING:
    from kalshictl.gatherer.connections import WsConnection
    from kalshictl.gatherer.gaps import GapLog
    from kalshictl.gatherer.shards import Shards, Subscription


class CoverageWindows:
    """Opens and closes the windows in the gap log; a market a window opens over is untrusted (``sync``) and its
    held book forgotten (``digest``)."""

    def __init__(self, gaplog: GapLog, sync: MarketSync, digest: BookDigest) -> None:
        self.gaplog = gaplog
        self.sync = sync
        self.digest = digest
        self.shards: Shards | None = None  # the placement, once attached

    def attach(self, shards: Shards) -> None:
        self.shards = shards

    def open(
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
        """One window per subscription per gap; a gap while one is open re-adds markets to it if its row covers
        them from before ``from_ts``. A row recorded over fewer markets (a late subscription's ``outage``, a digest
        mismatch's one market) or from a later time does not: that window is closed now and one over all its
        still-untrusted markets and these, from the earlier start, takes its place (markets untrusted without a
        window row that names them would lose deltas without a record)."""
        markets = set(sub.tickers if tickers is None else tickers)
        if not markets:
            return
        for t in markets:
            self.sync.invalidate(t, rx)
            self.digest.drop(t)
        w = sub.window
        if w is not None:
            if w.from_ts <= from_ts and markets <= w.covered:
                w.awaiting |= markets
                return
            self.gaplog.close(w.window_id, max(rx, w.last_resync))
            sub.window = None
            markets |= w.awaiting
            from_ts = min(from_ts, w.from_ts)
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
        sub.window = SubscriptionWindow(wid, reason, markets, from_ts=from_ts, covered=frozenset(markets))

    def resynced(self, sub: Subscription, tickers: Iterable[str], ts: int) -> None:
        """These markets of the subscription are trusted again (or left it) at ``ts``: its window closes with the
        last of them."""
        w = sub.window
        if w is None:
            return
        for t in tickers:
            w.awaiting.discard(t)
        w.last_resync = max(w.last_resync, ts)
        if not w.awaiting:
            self.gaplog.close(w.window_id, w.last_resync)
            sub.window = None

    def disconnected(self, conn: WsConnection, st: ConnState) -> None:
        """A connection dropped: a window for every subscription it carried (every channel, for a global one); its
        sids are gone."""
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
                    start = min(from_ts, window_start(st, ss, rx)) if ss is not None else from_ts
                    self.open(sub, "disconnect", start, rx, sid=sid)
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

    def channel_resumed(self, st: ConnState, channel: str, rx: int) -> None:
        """A global channel's resubscription was acknowledged: its disconnect window closes."""
        wid = st.global_windows.pop(channel, None)
        if wid is not None:
            self.gaplog.close(wid, rx)

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
            self.open(sub, "outage", start, rx, tickers=ts)

    def open_count(self, states: Iterable[ConnState]) -> int:
        """Windows open now: the subscriptions' and the global channels'."""
        if self.shards is None:
            return 0
        return sum(1 for s in self.shards.all_subs() if s.window is not None) + sum(
            len(st.global_windows) for st in states
        )
