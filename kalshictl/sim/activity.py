"""Seeded market activity: order-book deltas, trades, ticker updates, lifecycle transitions and metadata changes.

One RNG (seeded from the run's seed) drives every decision, so the same seed gives the same sequence of actions.
Books stay valid: no level goes negative, a level reaching 0 is removed, and the yes and no bids never cross.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

from kalshictl.sim.book import NO, YES
from kalshictl.sim.config import SimConfig
from kalshictl.sim.feed import Feed
from kalshictl.sim.fmt import Clock
from kalshictl.sim.markets import (
    ACTIVE,
    CLOSED,
    DETERMINED,
    FINALIZED,
    INACTIVE,
    INITIALIZED,
    MarketState,
    Universe,
)  # fmt: skip
from kalshictl.sim.render import _RANGES
from kalshictl.sim.trades import TradeLog

MAX_LEVELS = 25
log = logging.getLogger(__name__)


class Activity:
    """Generates exchange events at ``rate`` events/s (see :meth:`run`), or on demand with :meth:`step`."""

    def __init__(self, u: Universe, feed: Feed, trades: TradeLog, cfg: SimConfig, clock: Clock) -> None:
        self.u = u
        self.feed = feed
        self.trades = trades
        self.cfg = cfg
        self.clock = clock
        self.rng = random.Random(cfg.seed * 7919 + 17)
        self.rate = float(cfg.rate)
        self.paused = cfg.paused
        self.tick_s = 0.005
        self.pending: list[tuple[int, int]] = []  # (action count due, market index) awaiting activation
        self.actions = 0  # actions performed so far (the clock of deterministic activations)
        self.activation_delay = max(1, int(max(self.rate, 1.0) * cfg.activation_delay_s))
        self.deactivated: list[int] = []  # markets deactivated during the run (candidates for a repeated deactivated)
        self.fee_overrides: set[int] = set()  # events with a fee override set

    # ----- helpers ----------------------------------------------------------------------------------------------
    def _emitted(self) -> int:
        return self.feed.stats.events.total()

    def _size(self, frac: bool, scale: int = 200) -> int:
        rng = self.rng
        return rng.randint(1, scale * 100) if frac else 100 * rng.randint(1, scale)

    def _pick_active(self) -> int | None:
        u, rng = self.u, self.rng
        for _ in range(4):
            idx = rng.randrange(u.n_markets) if rng.random() < 0.1 else u.pick_busy(rng)
            if u.status(idx) == ACTIVE:
                return idx
        return None

    # ----- actions ----------------------------------------------------------------------------------------------
    def delta_action(self, idx: int, ts_ms: int) -> None:
        """Add to, reduce or remove one level of market ``idx``; sometimes repeat it identically."""
        u, rng, feed = self.u, self.rng, self.feed
        st = u.state(idx)
        book = st.book
        tick = u.tick(idx)
        frac = u.fractional(idx)
        side = YES if rng.random() < 0.5 else NO
        levels = book.yes if side == YES else book.no
        other = book.no if side == YES else book.yes
        before = book.top()
        if not levels or (rng.random() < 0.45 and len(levels) < MAX_LEVELS):
            limit = 10_000 - (max(other) if other else 0) - tick  # highest price that does not cross
            if levels:
                best = max(levels)
            else:
                fair = u.fair(idx)
                best = fair - tick if side == YES else 10_000 - fair - tick
            price = min(limit, best + tick * rng.randint(-6, 1))
            if price < tick:
                return
            size_delta = self._size(frac)
        else:
            price = rng.choice(list(levels))
            cur = levels[price]
            r = rng.random()
            if r < 0.4:
                size_delta = -cur
            elif r < 0.75:
                size_delta = -rng.randint(1, cur) if frac else -100 * rng.randint(1, cur // 100)
            else:
                size_delta = self._size(frac)
        ticker = u.ticker(idx)
        book.apply(side, price, size_delta)
        feed.delta(idx, ticker, side, price, size_delta, ts_ms)
        if rng.random() < self.cfg.duplicate_delta_share and (size_delta > 0 or levels.get(price, 0) >= -size_delta):
            book.apply(side, price, size_delta)
            feed.delta(idx, ticker, side, price, size_delta, ts_ms)
        if book.top() != before:
            feed.ticker(idx, ticker, st, ts_ms)

    def trade_action(self, idx: int, ts_ms: int) -> None:
        """A taker hits the best bid of one side: a delta on that level, the trade, a ticker update."""
        u, rng = self.u, self.rng
        st = u.state(idx)
        book = st.book
        taker = YES if rng.random() < 0.5 else NO
        consumed = NO if taker == YES else YES  # buying yes takes the best no bid, and vice versa
        levels = book.side(consumed)
        if not levels:
            taker, consumed = consumed, taker
            levels = book.side(consumed)
            if not levels:
                return
        price = max(levels)
        size = min(levels[price], self._size(u.fractional(idx), 50))
        yes_price = price if consumed == YES else 10_000 - price
        ticker = u.ticker(idx)
        book.apply(consumed, price, -size)
        self.feed.delta(idx, ticker, consumed, price, -size, ts_ms)
        bits = f"{rng.getrandbits(128):032x}"
        trade_id = f"{bits[:8]}-{bits[8:12]}-4{bits[13:16]}-a{bits[17:20]}-{bits[20:]}"
        st.volume += size
        st.dollar_volume += size * yes_price
        st.oi = st.oi + size if rng.random() < 0.6 else max(0, st.oi - size)
        st.prev_price = st.last_price
        st.last_price = yes_price
        self.trades.add(trade_id, ticker, ts_ms, yes_price, 10_000 - yes_price, size, taker)
        self.feed.trade(idx, ticker, trade_id, yes_price, 10_000 - yes_price, size, taker, ts_ms)
        self.feed.ticker(idx, ticker, st, ts_ms, size)

    def lifecycle_action(self, ts_ms: int) -> None:
        """Move a random non-busy market one step through its lifecycle (or create markets when it has none left)."""
        u, rng, feed = self.u, self.rng, self.feed
        idx = rng.randrange(u.n_markets)
        for _ in range(3):  # busy markets stay active for the whole run (tests and benchmarks rely on them)
            if idx not in u.busy_set:
                break
            idx = rng.randrange(u.n_markets)
        status = u.status(idx)
        if status == FINALIZED or idx in u.busy_set or idx in {i for _, i in self.pending}:
            self.create_action(ts_ms)
            return
        st = u.state(idx)
        ticker = u.ticker(idx)
        now_s = ts_ms // 1000
        st.updated_ts = now_s
        if status in (INACTIVE, INITIALIZED):
            st.status = ACTIVE
            if status == INITIALIZED:
                st.open_ts = now_s
            st.close_ts = max(st.close_ts, now_s + 3600)  # an active market closes in the future
            feed.lifecycle(
                ticker, "activated", ts_ms, {"is_deactivated": False, "open_ts": st.open_ts, "close_ts": st.close_ts}
            )
        elif status == ACTIVE and rng.random() < 0.35:
            st.status = INACTIVE
            self.deactivated.append(idx)
            feed.lifecycle(ticker, "deactivated", ts_ms, {"is_deactivated": True})
        elif status == ACTIVE and rng.random() < 0.5:
            st.close_ts = max(now_s + 60, st.close_ts + 3600 * rng.randint(-24, 72))
            feed.lifecycle(ticker, "close_date_updated", ts_ms, {"close_ts": st.close_ts})
        elif status in (ACTIVE, CLOSED):
            self._determine(idx, ticker, st, ts_ms)
        else:  # determined
            st.status = FINALIZED
            st.settled_ts = now_s
            feed.lifecycle(ticker, "settled", ts_ms, {"settled_ts": now_s})

    def metadata_action(self, ts_ms: int) -> None:
        """A change that is no status transition: ``metadata_updated`` (sometimes sent twice, identically), a
        repeated ``deactivated`` of an already inactive market, or an ``event_fee_update`` (set or cleared).

        The real exchange repeats ``deactivated`` and ``metadata_updated`` for one market; neither carries a time.
        Multivariate markets get none of these (their channel has no metadata_updated or fee updates).
        """
        u, rng, feed = self.u, self.rng, self.feed
        r = rng.random()
        if r < 0.3:
            live = [i for i in self.deactivated if u.status(i) == INACTIVE]
            self.deactivated = live
            if live:
                idx = rng.choice(live)
                feed.lifecycle(u.ticker(idx), "deactivated", ts_ms, {"is_deactivated": True})
                return
        if r < 0.7:
            idx = rng.randrange(u.n_markets)
            if u.is_mve(idx) or u.status(idx) == FINALIZED:
                return
            st = u.state(idx)
            st.updated_ts = ts_ms // 1000
            k = idx - u.ev_first[u.mk_event[idx]]
            msg = {"yes_sub_title": f"Above {k}", "strike_type": "greater", "floor_strike": k}
            ticker = u.ticker(idx)
            for _ in range(2 if rng.random() < 0.3 else 1):
                feed.lifecycle(ticker, "metadata_updated", ts_ms, msg)
            return
        e = rng.randrange(u.n_events)
        if u.is_mve_event(e):
            return
        if e in self.fee_overrides:
            self.fee_overrides.discard(e)
            fee: dict = {"fee_type_override": None, "fee_multiplier_override": None}
        else:
            self.fee_overrides.add(e)
            fee = {"fee_type_override": "quadratic", "fee_multiplier_override": rng.choice((0.5, 1, 2))}
        feed.fee_update({"event_ticker": u.event_ticker(e), **fee}, ts_ms)

    def _determine(self, idx: int, ticker: str, st: MarketState, ts_ms: int) -> None:
        book = st.book
        for side in (YES, NO):
            for price, size in book.levels(side):
                book.apply(side, price, -size)
                self.feed.delta(idx, ticker, side, price, -size, ts_ms)
        st.status = DETERMINED
        st.result = YES if self.rng.random() < 0.5 else NO
        st.settlement_value = 10_000 if st.result == YES else 0
        st.determination_ts = ts_ms // 1000
        st.close_ts = min(st.close_ts, st.determination_ts)
        self.feed.lifecycle(
            ticker,
            "determined",
            ts_ms,
            {
                "result": st.result,
                "determination_ts": st.determination_ts,
                "settlement_value": f"{st.settlement_value // 10_000}.0000",
            },
        )

    def create_action(self, ts_ms: int) -> None:
        """Create a new event with 1-3 new markets (event_lifecycle + created); each activates a bit later."""
        u, rng, feed = self.u, self.rng, self.feed
        now_s = ts_ms // 1000
        e, idxs = u.add_event(rng, rng.randint(1, 3), now_s)
        s = u.ev_series[e]
        feed.event_lifecycle(
            {
                "event_ticker": u.event_ticker(e),
                "exchange_index": 0,
                "title": f"New event {e}",
                "subtitle": f"Event {e}",
                "collateral_return_type": "",
                "series_ticker": u.series_names[s],
            },
            ts_ms,
        )
        due = self.actions + self.activation_delay
        for idx in idxs:
            st = u.state(idx)
            structure, ranges = _RANGES[u.tick(idx)]
            feed.lifecycle(
                u.ticker(idx),
                "created",
                ts_ms,
                {
                    "exchange_index": 0,
                    "open_ts": st.open_ts,
                    "close_ts": st.close_ts,
                    "price_level_structure": structure,
                    "price_ranges": ranges,
                    "additional_metadata": {
                        "name": u.ticker(idx),
                        "title": f"New market {idx}",
                        "yes_sub_title": "Yes",
                        "no_sub_title": "No",
                        "rules_primary": "Simulated.",
                        "rules_secondary": "",
                        "can_close_early": True,
                        "event_ticker": u.event_ticker(e),
                        "expected_expiration_ts": st.close_ts + 3600,
                        "strike_type": "greater",
                    },
                },
            )
            self.pending.append((due, idx))

    def create_now(self, n: int) -> list[str]:
        """Create at least ``n`` markets now (new events, ``created`` each); returns their tickers."""
        before = self.u.n_markets
        while self.u.n_markets - before < n:
            self.create_action(self.clock.now_ms())
        return [self.u.ticker(i) for i in range(before, self.u.n_markets)]

    def set_active_now(self, n: int, active: bool) -> list[str]:
        """Deactivate ``n`` active markets (``active`` false) or re-activate ``n`` paused ones (``activated``, as
        Kalshi's docs describe: resting orders cancelled, so the book empties); busy markets are left alone."""
        u, feed = self.u, self.feed
        want = INACTIVE if active else ACTIVE
        idxs = [i for i in range(u.n_markets) if u.status(i) == want and i not in u.busy_set][:n]
        out = []
        for idx in idxs:
            ts_ms = self.clock.now_ms()
            st, ticker = u.state(idx), u.ticker(idx)
            st.updated_ts = ts_ms // 1000
            if active:
                st.status = ACTIVE
                st.close_ts = max(st.close_ts, ts_ms // 1000 + 3600)
                feed.lifecycle(
                    ticker,
                    "activated",
                    ts_ms,
                    {"is_deactivated": False, "open_ts": st.open_ts, "close_ts": st.close_ts},
                )
                for side in (YES, NO):  # the reactivation cancels every resting order
                    for price, size in st.book.levels(side):
                        st.book.apply(side, price, -size)
                        feed.delta(idx, ticker, side, price, -size, ts_ms)
            else:
                st.status = INACTIVE
                self.deactivated.append(idx)
                feed.lifecycle(ticker, "deactivated", ts_ms, {"is_deactivated": True})
            out.append(ticker)
        return out

    def _activate_due(self) -> None:
        if not self.pending or self.pending[0][0] > self.actions:
            return
        keep = []
        for due, idx in self.pending:
            if due > self.actions:
                keep.append((due, idx))
                continue
            st = self.u.state(idx)
            if st.status == INITIALIZED:
                ts_ms = self.clock.now_ms()
                st.status = ACTIVE
                st.open_ts = st.updated_ts = ts_ms // 1000
                st.close_ts = max(st.close_ts, st.open_ts + 3600)
                self.feed.lifecycle(
                    self.u.ticker(idx),
                    "activated",
                    ts_ms,
                    {"is_deactivated": False, "open_ts": st.open_ts, "close_ts": st.close_ts},
                )
        self.pending = keep

    # ----- driving ----------------------------------------------------------------------------------------------
    def step(self, n: int) -> int:
        """Perform actions until at least ``n`` events were emitted; returns how many were."""
        start = self._emitted()
        rng, cfg = self.rng, self.cfg
        t_trade = cfg.trade_share
        t_life = t_trade + cfg.lifecycle_share
        t_create = t_life + cfg.create_share
        t_meta = t_create + cfg.metadata_share
        guard = 0
        while self._emitted() - start < n and guard < 20 * n + 100:
            guard += 1
            self.actions += 1
            self._activate_due()
            ts_ms = self.clock.now_ms()
            r = rng.random()
            if r < t_trade:
                idx = self._pick_active()
                if idx is not None:
                    self.trade_action(idx, ts_ms)
            elif r < t_life:
                self.lifecycle_action(ts_ms)
            elif r < t_create:
                self.create_action(ts_ms)
            elif r < t_meta:
                self.metadata_action(ts_ms)
            else:
                idx = self._pick_active()
                if idx is not None:
                    self.delta_action(idx, ts_ms)
        return self._emitted() - start

    async def run(self) -> None:
        """Emit events at ``self.rate`` per second until cancelled (idle while paused)."""
        last = time.monotonic()
        carry = 0.0
        while True:
            await asyncio.sleep(self.tick_s)
            now = time.monotonic()
            if self.paused or self.rate <= 0:
                last, carry = now, 0.0
                continue
            due = min(carry + (now - last) * self.rate, self.rate * 0.25 + 1)
            last = now
            n = int(due)
            try:
                emitted = self.step(n) if n > 0 else 0
            except Exception:  # keep the exchange alive; a bug here must not silence the feed
                log.exception("activity step failed")
                emitted = n
            carry = due - emitted
