"""Markets learned after start-up, placed once: lifecycle events, frames of a market placed nowhere, a re-anchor
listing after a lifecycle window, and the periodic registry refresh (docs/gatherer.md "Placement").

Every path ends in :meth:`Placement.place`: each recordable market not placed yet is placed once, and with a start
time the books of the markets placed now are recorded as an ``outage`` from then until each one's first snapshot.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

from kalshictl.gatherer.backfill import LIFECYCLE_CHANNELS, created_us
from kalshictl.gatherer.registry import recordable
from kalshictl.gatherer.router_state import GAP_CLOCK_SLACK_US, ORDERBOOK
from kalshictl.kalshi.validate import valid_markets
from kalshictl.units import now_us

if TYPE_CHECKING:
    from kalshictl.gatherer.gaps import GapLog, Window
    from kalshictl.gatherer.registry import MarketRegistry
    from kalshictl.gatherer.router import Router
    from kalshictl.gatherer.shards import Shards
    from kalshictl.kalshi.messages import Lifecycle
    from kalshictl.kalshi.rest import KalshiRest

log = logging.getLogger("kalshictl.gatherer")

UNKNOWN_MARKET_LOOKBACK_US = 600_000_000  # a lifecycle window this recent may have hidden a market's `created`
REFRESH_SLACK_S = 5  # min_updated_ts reaches back this far before the previous refresh


def refresh_start() -> int:
    """The ``min_updated_ts`` (s) of the next registry refresh when the listing starts now (on the one clock, like
    the exchange's times)."""
    return now_us() // 1_000_000 - REFRESH_SLACK_S


class Placement:
    """Places the markets a gatherer learns of after its start-up listing (see module docs)."""

    def __init__(
        self,
        name: str,
        registry: MarketRegistry,
        router: Router,
        gaplog: GapLog,
        shards: Shards,
        rest: KalshiRest,
        *,
        refresh_from: int,
    ) -> None:
        self.name = name
        self.registry = registry
        self.router = router
        self.gaplog = gaplog
        self.shards = shards
        self.rest = rest
        self._refresh_from = refresh_from  # the next refresh's min_updated_ts (s)

    def place(self, tickers: list[str], start: int | None = None) -> list[str]:
        """The one placement of markets learned on any path (startup, lifecycle ``created``/``activated``/
        ``deactivated``, a window's re-anchor listing, the registry refresh): each recordable market not placed yet is
        placed once — a market named twice, or again while its ``subscribe``/``add_markets`` is in flight, is
        already placed (docs/gatherer.md "Placement"). With ``start``, the books of the markets placed now are an
        ``outage`` from then until each one's first snapshot. Returns the markets placed now."""
        placed = self.shards.sub_of
        new = [t for t in dict.fromkeys(tickers) if t not in placed and recordable(self.registry.status(t))]
        if new:
            self.router.add_markets(new)
            if start is not None:
                self.router.record_late(new, start)
        return new

    async def refresh_registry(self) -> tuple[int, int]:
        """``GET /markets?min_updated_ts=…``: subscribe markets that became recordable, unsubscribe those that
        stopped, and place any recordable market that is not placed yet. Returns (joined, left)."""
        since = self._refresh_from
        self._refresh_from = refresh_start()
        join, leave = await self.registry.refresh(self.rest, since)
        if leave:
            self.router.remove_markets(leave)
        # a market placed only now missed its lifecycle event here (created or re-activated after ``since``, or
        # while a lifecycle channel was blind): its book is not ours from then until its first snapshot
        start = min(since * 1_000_000, self.learned_from(created=False))
        self.place(self.registry.recordable(), start)
        if join or leave:
            log.info("%s: registry refresh: %d markets joined, %d left", self.name, len(join), len(leave))
        return len(join), len(leave)

    async def on_lifecycle(self, ev: Lifecycle) -> None:
        t = ev.ticker
        match ev.event_type:
            case "created" | "activated" | "deactivated":
                status = {"created": "initialized", "activated": "active"}.get(ev.event_type, "inactive")
                self.registry.add(t, status)
                # a paused market stays subscribed: its `activated` may come any moment
                self.place([t], self.learned_from(created=ev.event_type == "created"))
            case "settled" | "finalized":
                self.registry.remove(t)
                if t in self.shards.sub_of or t in self.shards.unplaced:
                    self.router.remove_markets([t])
            case "determined" if t in self.registry:
                self.registry.add(t, "determined")
            case _:
                pass

    def learned_from(self, *, created: bool) -> int:
        """From when the book of a market learned now is not ours (until its first snapshot): its creation (now, less
        clock slack), or — its ``created`` missed while a lifecycle channel was blind — that window's start."""
        start = now_us() - GAP_CLOCK_SLACK_US
        blinds = [self.gaplog.last_from[c] for c in LIFECYCLE_CHANNELS if c in self.gaplog.last_from]
        blind = max(blinds, default=None)  # the latest window of either lifecycle channel
        if not created and blind is not None and start - blind < UNKNOWN_MARKET_LOOKBACK_US:
            start = min(start, blind)
        return start

    def on_unknown_frame(self, ticker: str) -> None:
        """Order-book frames of a market placed nowhere arrived on one of our sids: the exchange holds it live, so it
        is learned like a market whose ``activated`` arrives now, through the one placement. (A market removed lately
        is not learned again: its last frames come from its old sid, :meth:`Router._not_left_here`.)"""
        if ticker not in self.registry:
            self.registry.add(ticker, "active")
        elif not recordable(self.registry.status(ticker)):
            return
        if self.place([ticker], self.learned_from(created=False)):
            log.warning("%s: order-book frames of %s, placed nowhere: subscribing it", self.name, ticker)

    def on_listed_markets(self, markets: list[dict[str, Any]], w: Window) -> None:
        """A re-anchor listing after a ticker/lifecycle window (the trade backfill's): markets this gatherer does not
        hold (created or re-listed while the lifecycle channel was blind) are subscribed now, and their order books
        from the window's start (or their creation) until their first snapshot are recorded as an ``outage``. After a
        lifecycle window, a listed market it does not hold that is not recordable now (settled meanwhile) may have
        been active during the window: its book over the window is recorded lost too. Items are validated as the
        registry's own listings are (a bad one is skipped and counted in /health)."""
        found: dict[str, str] = {}
        passed: list[str] = []
        start = w.from_ts
        for m in valid_markets(markets, self.registry.rejected):
            t = m["ticker"]
            status = m.get("status")
            status = status if isinstance(status, str) and status else "active"
            if t in self.shards.sub_of or t in found:
                continue
            if not recordable(status):
                passed.append(t)
                continue
            found[t] = status
            with contextlib.suppress(Exception):
                start = min(start, created_us(m["created_time"]))
        if passed and w.channel in LIFECYCLE_CHANNELS:
            self.gaplog.record(
                channel=ORDERBOOK, reason="outage", from_ts=w.from_ts, to_ts=now_us(), tickers=sorted(set(passed))
            )
        for t, status in found.items():
            self.registry.add(t, status)
        new = self.place(list(found), start)
        if new:
            log.warning("%s: %d markets unknown before a lifecycle window: subscribing", self.name, len(new))
