"""The past of the local exchange: ``history_days`` days of markets that opened, traded and settled before the run.

Each past market is an ordinary market of the :class:`~kalshictl.sim.markets.Universe` (appended at start, status
``finalized``) with a recorded past: its top of book over time (quotes) and its trades. Candlesticks are computed
from those, so an importer can be checked against this ground truth. The cutoff (docs/sim.md, "History") splits the
past as Kalshi's ``GET /historical/cutoff`` does: markets settled before it, and trades created before it, are served
only under ``/historical/…``; the rest by the live endpoints. Everything derives from the seed.
"""

from __future__ import annotations

import random
import uuid
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field

from kalshictl.sim.markets import FINALIZED, MarketState, Universe
from kalshictl.sim.trades import TradeLog, TradeRec

DAY_S = 86_400
PERIODS = (1, 60, 1440)  # candle lengths in minutes (Kalshi's ``period_interval`` values)


@dataclass
class PastMarket:
    """One past market: times in Unix seconds, quotes ``(ts_ms, yes_bid, yes_ask)`` and trades, both in time order."""

    idx: int
    ticker: str
    series: str
    open_ts: int
    close_ts: int
    settled_ts: int
    quotes: list[tuple[int, int, int]] = field(default_factory=list)
    trades: list[TradeRec] = field(default_factory=list)
    oi_after: list[int] = field(default_factory=list)  # open interest after each trade


@dataclass(frozen=True)
class Candle:
    """One candlestick in integer units (prices 1e-4 USD, counts 1e-2 contracts); ``price`` is None without trades."""

    end_ts: int  # Unix seconds, inclusive end of the period
    yes_bid: tuple[int, int, int, int]  # open, low, high, close
    yes_ask: tuple[int, int, int, int]
    price: tuple[int, int, int, int, int] | None  # open, low, high, close, mean (volume-weighted)
    previous: int | None  # last trade price before the period
    volume: int
    open_interest: int


class HistoryWorld:
    """The past ``days`` days before the universe's anchor (today 00:00 UTC), ``markets_per_day`` markets a day."""

    def __init__(self, u: Universe, days: int, seed: int, markets_per_day: int = 12) -> None:
        self.u = u
        self.days = max(0, days)
        self.start_ts = u.anchor_ts - self.days * DAY_S
        # live data keeps the newer half of the past (Kalshi keeps about 3 months live; the sim's past is shorter)
        self.cutoff_ts = u.anchor_ts - (self.days // 2) * DAY_S
        self.markets: dict[str, PastMarket] = {}
        self.by_idx: dict[int, PastMarket] = {}
        self.archived_idx: set[int] = set()
        self._archived_trades: list[TradeRec] = []  # created before the cutoff, oldest first
        self._archived_by_ticker: dict[str, list[TradeRec]] = {}
        self._live_trades: list[TradeRec] = []
        self.malformed: set[str] = set()  # trade ids served with an inexact count (tests of row isolation)
        if self.days:
            self._build(random.Random(f"history-{seed}"), markets_per_day)

    # ----- generation -------------------------------------------------------------------------------------------
    def _build(self, rng: random.Random, per_day: int) -> None:
        u = self.u
        plain = [s for s, name in enumerate(u.series_names) if not name.startswith("KXMVE")] or [0]
        seq = 0
        all_trades: list[TradeRec] = []
        for d in range(self.days):
            day = self.start_ts + d * DAY_S
            made = 0
            while made < per_day:
                n = min(per_day - made, rng.choice((1, 1, 2, 3)))
                opened = day + 3600 * rng.randrange(0, 6)
                close = day + DAY_S - 3600 * rng.randrange(0, 6)
                for idx in u.add_past_event(rng.choice(plain), n, opened - 3600, close):
                    pm = self._market(idx, opened, close, rng, seq)
                    seq += len(pm.trades)
                    all_trades.extend(pm.trades)
                made += n
        all_trades.sort(key=lambda t: (t.ts_ms, t.trade_id))
        for t in all_trades:
            if t.ts_ms // 1000 < self.cutoff_ts:
                self._archived_trades.append(t)
                self._archived_by_ticker.setdefault(t.ticker, []).append(t)
            else:
                self._live_trades.append(t)

    def _market(self, idx: int, opened: int, close: int, rng: random.Random, seq: int) -> PastMarket:
        u = self.u
        ticker = u.ticker(idx)
        pm = PastMarket(idx, ticker, u.series_names[u.ev_series[u.mk_event[idx]]], opened, close, close + 360)
        tick = u.tick(idx)
        frac = u.fractional(idx)
        mid = u.fair(idx)
        spread = tick * rng.randint(1, 3)
        t_ms = opened * 1000
        end_ms = close * 1000
        oi = volume = last = 0
        bid, ask = max(tick, mid - spread), min(10_000 - tick, mid + spread)
        pm.quotes.append((t_ms, bid, ask))
        steps = rng.randint(20, 160)
        gap = max(1, (end_ms - t_ms) // (steps + 1))
        for _ in range(steps):
            t_ms += rng.randint(1, 2 * gap)
            if t_ms >= end_ms:
                break
            if rng.random() < 0.5:  # the book moves
                mid = min(10_000 - 2 * tick, max(2 * tick, mid + tick * rng.randint(-2, 2)))
                spread = tick * rng.randint(1, 3)
                bid, ask = max(tick, mid - spread), min(10_000 - tick, mid + spread)
                if pm.quotes[-1][0] == t_ms:
                    pm.quotes[-1] = (t_ms, bid, ask)
                else:
                    pm.quotes.append((t_ms, bid, ask))
                continue
            taker = "yes" if rng.random() < 0.5 else "no"
            price = ask if taker == "yes" else bid
            size = rng.randint(1, 50_00) if frac else 100 * rng.randint(1, 200)
            tid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            pm.trades.append(TradeRec(seq + len(pm.trades), tid, ticker, t_ms, price, 10_000 - price, size, taker))
            oi = max(0, oi + (size if taker == "yes" else -size // 2))
            pm.oi_after.append(oi)
            volume += size
            last = price
        st = MarketState()  # settled: an empty book
        st.status = FINALIZED
        st.created_ts, st.open_ts, st.close_ts = opened - 3600, opened, close
        st.updated_ts = pm.settled_ts
        st.result = "yes" if rng.random() < 0.5 else "no"
        st.settlement_value = 10_000 if st.result == "yes" else 0
        st.determination_ts = close + 60
        st.settled_ts = pm.settled_ts
        st.volume, st.oi, st.last_price, st.prev_price = volume, oi, last, last
        st.dollar_volume = sum(t.size * t.yes_price for t in pm.trades)
        st.prev_yes_bid, st.prev_yes_ask = bid, ask
        u.states[idx] = st
        self.markets[ticker] = pm
        self.by_idx[idx] = pm
        if pm.settled_ts < self.cutoff_ts:
            self.archived_idx.add(idx)
        return pm

    # ----- cutoff -----------------------------------------------------------------------------------------------
    def archived(self, ticker: str) -> bool:
        """Whether ``ticker`` settled before the cutoff (served only under ``/historical/…``)."""
        pm = self.markets.get(ticker)
        return pm is not None and pm.idx in self.archived_idx

    def seed_live_trades(self, log: TradeLog) -> None:
        """Put the past trades created at or after the cutoff into the live trade log (before any live trade)."""
        for t in self._live_trades:
            log.add(t.trade_id, t.ticker, t.ts_ms, t.yes_price, t.no_price, t.size, t.taker)

    # ----- historical trades ------------------------------------------------------------------------------------
    def trades_page(
        self, limit: int, before: int | None, ticker: str | None, min_ts: int | None, max_ts: int | None
    ) -> tuple[list[TradeRec], int | None]:
        """Archived trades newest first: up to ``limit`` below position ``before`` of the filtered list."""
        trades = self._archived_trades if ticker is None else self._archived_by_ticker.get(ticker, [])
        lo = 0 if min_ts is None else bisect_left(trades, min_ts * 1000, key=lambda t: t.ts_ms)
        hi = len(trades) if max_ts is None else bisect_right(trades, max_ts * 1000 + 999, key=lambda t: t.ts_ms)
        if before is not None:
            hi = min(hi, before)
        start = max(lo, hi - limit)
        page = trades[start:hi][::-1]
        return page, (start if start > lo else None)

    def all_trades(self) -> list[TradeRec]:
        """Every past trade (ground truth), oldest first."""
        return sorted(self._archived_trades + self._live_trades, key=lambda t: (t.ts_ms, t.trade_id))

    # ----- candlesticks -----------------------------------------------------------------------------------------
    def candles(self, ticker: str, period: int, start_ts: int, end_ts: int) -> list[Candle]:
        """Candles of ``period`` minutes ending within [start_ts, end_ts], over the market's open..close."""
        pm = self.markets.get(ticker)
        if pm is None:
            return []
        length = period * 60
        first = -(-(pm.open_ts + 1) // length) * length  # the period holding the opening second
        last = -(-pm.close_ts // length) * length
        lo = max(first, -(-start_ts // length) * length)
        hi = min(last, end_ts // length * length)
        out = []
        q_ts = [q[0] for q in pm.quotes]
        t_ts = [t.ts_ms for t in pm.trades]
        for end in range(lo, hi + 1, length):
            out.append(_candle(pm, q_ts, t_ts, end, length))
        return out

    def candle_count(self, ticker: str, period: int, start_ts: int, end_ts: int) -> int:
        """How many candles :meth:`candles` returns (without building them)."""
        pm = self.markets.get(ticker)
        if pm is None:
            return 0
        length = period * 60
        lo = max(-(-(pm.open_ts + 1) // length) * length, -(-start_ts // length) * length)
        hi = min(-(-pm.close_ts // length) * length, end_ts // length * length)
        return max(0, (hi - lo) // length + 1)


def _candle(pm: PastMarket, q_ts: list[int], t_ts: list[int], end: int, length: int) -> Candle:
    """The period (end - length, end] in seconds; an event at ``ts_ms`` belongs to the period its second ends in."""
    start_ms, end_ms = (end - length) * 1000 + 999, end * 1000 + 999  # (start, end] by whole seconds
    q0 = bisect_right(q_ts, start_ms) - 1  # the quote in force when the period opens
    q1 = bisect_right(q_ts, end_ms)
    quotes = pm.quotes[max(q0, 0) : q1]
    bids = [q[1] for q in quotes]
    asks = [q[2] for q in quotes]
    t0, t1 = bisect_right(t_ts, start_ms), bisect_right(t_ts, end_ms)
    trades = pm.trades[t0:t1]
    previous = pm.trades[t0 - 1].yes_price if t0 > 0 else None
    oi = pm.oi_after[t1 - 1] if t1 > 0 else 0
    price = None
    volume = sum(t.size for t in trades)
    if trades:
        prices = [t.yes_price for t in trades]
        num = sum(t.yes_price * t.size for t in trades)
        mean = (2 * num + volume) // (2 * volume)  # volume-weighted, rounded half up to 1e-4 USD
        price = (prices[0], min(prices), max(prices), prices[-1], mean)
    return Candle(
        end,
        (bids[0], min(bids), max(bids), bids[-1]),
        (asks[0], min(asks), max(asks), asks[-1]),
        price,
        previous,
        volume,
        oi,
    )
