"""The generated world's events: ground truth first, then fan-out to the subscribers of their channel.

Frames are serialised once per event; only the envelope (``sid``/``seq``) differs per subscriber. Faults are rolled
per subscriber frame. ``seq`` exists only on orderbook_snapshot/orderbook_delta frames (and acks, see ws.py).

Lifecycle messages are sent as Kalshi sends them: no ``ts``/``ts_ms``; multivariate (``KXMVE...``) markets' lifecycle
and event creations go only to ``multivariate_market_lifecycle``, everything else (and ``event_fee_update``) to
``market_lifecycle_v2``.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import orjson

from kalshictl.sim.book import NO, YES, Book
from kalshictl.sim.config import SimConfig
from kalshictl.sim.faults import DROP, DROP_ALL, DUP, GARBAGE, MALFORMED, SKIP, FaultInjector
from kalshictl.sim.fmt import PRICE_STR, iso, size_str
from kalshictl.sim.ground_truth import GroundTruth
from kalshictl.sim.markets import MarketState, Universe
from kalshictl.sim.stats import Stats
from kalshictl.sim.subscriptions import (
    LIFECYCLE,
    MVE_LIFECYCLE,
    MVE_PREFIX,
    ORDERBOOK,
    TICKER,
    TRADE,
    FrameSink,
    Sub,
    Subscriptions,
)

# message types with no seq and no time of their own: the dup fault leaves them alone (see sim/faults.py)
UNIDENTIFIED = frozenset((LIFECYCLE, MVE_LIFECYCLE, "event_lifecycle", "event_fee_update"))


class Feed(Subscriptions):
    """Routes every emitted event to the ground truth and to the subscribers of its channel."""

    def __init__(
        self,
        universe: Universe,
        gt: GroundTruth,
        faults: FaultInjector,
        stats: Stats,
        cfg: SimConfig | None = None,
        drop_all: Callable[[], int] = lambda: 0,
    ) -> None:
        super().__init__()
        self.u = universe
        self.gt = gt
        self.faults = faults
        self.stats = stats
        self.cfg = cfg or SimConfig()
        self.drop_all = drop_all  # the drop_all fault: abort every connection, returns how many
        self._ts_rng = random.Random(self.cfg.seed * 31 + 0x75)  # which deltas go without ts (never perturbs activity)

    # ----- sending ----------------------------------------------------------------------------------------------
    def _send(self, conn: FrameSink, frame: bytes, mtype: str, skippable: bool = False) -> None:
        f = self.faults
        if f.ws_active:
            action = f.roll_frame(skippable, duplicable=mtype not in UNIDENTIFIED)
            if action == DROP:
                conn.abort()
                return
            if action == DROP_ALL:
                self.drop_all()
                return
            if action == SKIP:
                return
            if action == DUP:
                conn.send(frame)
                self.stats.messages[mtype] += 1
            elif action == MALFORMED:
                conn.send(GARBAGE)
        conn.send(frame)
        self.stats.messages[mtype] += 1

    def snapshot(self, sub: Sub, idx: int, consume: bool = True) -> None:
        """Send an orderbook_snapshot of market ``idx`` to ``sub`` (consuming one seq unless ``consume`` is False)."""
        book: Book = self.u.peek(idx).book
        msg: dict = {"market_ticker": self.u.ticker(idx), "market_id": self.u.market_id(idx)}
        yes = book.levels(YES)
        if yes:
            msg["yes_dollars_fp"] = [[PRICE_STR[p], size_str(s)] for p, s in yes]
        if book.no:
            no = sorted((10_000 - p, s) for p, s in book.no.items()) if sub.yes_price else book.levels(NO)
            msg["no_dollars_fp"] = [[PRICE_STR[p], size_str(s)] for p, s in no]
        if consume or sub.seq == 0:
            sub.seq += 1
        frame = b'{"type":"orderbook_snapshot","sid":%d,"seq":%d,"msg":%b}' % (sub.sid, sub.seq, orjson.dumps(msg))
        self._send(sub.conn, frame, "orderbook_snapshot")

    # ----- events -----------------------------------------------------------------------------------------------
    def delta(self, idx: int, ticker: str, side: str, price: int, size_delta: int, ts_ms: int) -> None:
        """Emit an order-book delta (the book must already be updated).

        With ``delta_ts_ms="sometimes"`` a share of deltas goes out without ``ts_ms``/``ts`` (optional in Kalshi's
        AsyncAPI); the ground truth keeps the true time and marks the record ``"untimed": true``.
        """
        cfg = self.cfg
        untimed = cfg.delta_ts_ms == "sometimes" and self._ts_rng.random() < cfg.untimed_delta_share
        self.gt.delta(ticker, ts_ms, side, price, size_delta, untimed)
        self.stats.events["delta"] += 1
        subs = self.by_ticker[ORDERBOOK].get(ticker)
        if not subs:
            return
        msg: dict[str, str | int] = {
            "market_ticker": ticker,
            "market_id": self.u.market_id(idx),
            "price_dollars": PRICE_STR[price],
            "delta_fp": size_str(size_delta),
            "side": side,
        }
        if not untimed:
            msg["ts"] = iso(ts_ms // 1000)
            msg["ts_ms"] = ts_ms
        body = orjson.dumps(msg)
        body_yes = None
        for sub in list(subs):
            if sub.conn.closed:
                continue
            b = body
            if sub.yes_price and side == NO:
                if body_yes is None:
                    msg["price_dollars"] = PRICE_STR[10_000 - price]
                    body_yes = orjson.dumps(msg)
                b = body_yes
            sub.seq += 1
            frame = b'{"type":"orderbook_delta","sid":%d,"seq":%d,"msg":%b}' % (sub.sid, sub.seq, b)
            self._send(sub.conn, frame, "orderbook_delta", skippable=True)

    def trade(self, idx: int, ticker: str, trade_id: str, yes: int, no: int, size: int, taker: str, ts_ms: int) -> None:
        """Emit a trade (``yes``/``no`` are the two legs' prices, ``taker`` the taker's outcome side)."""
        self.gt.trade(trade_id, ticker, ts_ms, yes, no, size, taker)
        self.stats.events["trade"] += 1
        subs = self._ticker_subs(TRADE, ticker)
        if not subs:
            return
        body = orjson.dumps(
            {
                "trade_id": trade_id,
                "market_ticker": ticker,
                "yes_price_dollars": PRICE_STR[yes],
                "no_price_dollars": PRICE_STR[no],
                "count_fp": size_str(size),
                "taker_side": taker,
                "taker_outcome_side": taker,
                "taker_book_side": "bid" if taker == YES else "ask",
                "is_block_trade": False,
                "ts_ms": ts_ms,
                "ts": ts_ms // 1000,
            }
        )
        for sub in subs:
            if not sub.conn.closed:
                self._send(sub.conn, b'{"type":"trade","sid":%d,"msg":%b}' % (sub.sid, body), "trade")

    def ticker(self, idx: int, ticker: str, st: MarketState, ts_ms: int, last_size: int = 0) -> bool:
        """Emit a ticker update unless this market already had one in this millisecond; returns whether it did."""
        if st.last_ticker_ms == ts_ms:
            return False
        st.last_ticker_ms = ts_ms
        yb, ybs, ya, yas = st.book.top()
        self.gt.ticker(ticker, ts_ms, yb, ya, st.last_price, st.volume, st.oi)
        self.stats.events["ticker"] += 1
        subs = self._ticker_subs(TICKER, ticker)
        if not subs:
            return True
        ts = ts_ms // 1000
        body = orjson.dumps(
            {
                "market_ticker": ticker,
                "market_id": self.u.market_id(idx),
                "price_dollars": PRICE_STR[st.last_price],
                "yes_bid_dollars": PRICE_STR[yb],
                "yes_ask_dollars": PRICE_STR[ya],
                "volume_fp": size_str(st.volume),
                "open_interest_fp": size_str(st.oi),
                "dollar_volume": st.dollar_volume // 1_000_000,
                "dollar_open_interest": st.oi * st.last_price // 1_000_000,
                "yes_bid_size_fp": size_str(ybs),
                "yes_ask_size_fp": size_str(yas),
                "last_trade_size_fp": size_str(last_size),
                "ts_ms": ts_ms,
                "ts": ts,
                "time": iso(ts),
            }
        )
        for sub in subs:
            if not sub.conn.closed:
                self._send(sub.conn, b'{"type":"ticker","sid":%d,"msg":%b}' % (sub.sid, body), "ticker")
        return True

    def _global(self, channel: str, mtype: str, body: bytes) -> None:
        subs = self.all[channel]
        if not subs:
            return
        prefix = b'{"type":"%b","sid":' % mtype.encode()
        for sub in list(subs):
            if not sub.conn.closed:
                self._send(sub.conn, prefix + b'%d,"msg":%b}' % (sub.sid, body), mtype)

    def lifecycle(self, ticker: str, event_type: str, ts_ms: int, extra: dict | None = None) -> None:
        """Emit a market lifecycle event as Kalshi sends it (no time of its own; ``ts_ms`` is only the truth's).

        ``KXMVE...`` markets go to ``multivariate_market_lifecycle`` (type of the same name), the others to
        ``market_lifecycle_v2``.
        """
        msg = {"market_ticker": ticker, "event_type": event_type}
        if extra:
            msg.update(extra)
        channel = MVE_LIFECYCLE if ticker.startswith(MVE_PREFIX) else LIFECYCLE
        self.gt.lifecycle(ticker, event_type, ts_ms, channel, msg)
        self.stats.events["lifecycle"] += 1
        self._global(channel, channel, orjson.dumps(msg))

    def event_lifecycle(self, msg: dict, ts_ms: int) -> None:
        """Emit an ``event_lifecycle`` (event created) on the lifecycle channel of its markets.

        Ground truth records it as a lifecycle event of the event ticker with event_type ``event_lifecycle``.
        """
        ticker = msg["event_ticker"]
        channel = MVE_LIFECYCLE if ticker.startswith(MVE_PREFIX) else LIFECYCLE
        self.gt.lifecycle(ticker, "event_lifecycle", ts_ms, channel, msg)
        self.stats.events["event_lifecycle"] += 1
        self._global(channel, "event_lifecycle", orjson.dumps(msg))

    def fee_update(self, msg: dict, ts_ms: int) -> None:
        """Emit an ``event_fee_update`` on ``market_lifecycle_v2`` (ground truth: ticker = event ticker)."""
        self.gt.lifecycle(msg["event_ticker"], "event_fee_update", ts_ms, LIFECYCLE, msg)
        self.stats.events["event_fee_update"] += 1
        self._global(LIFECYCLE, "event_fee_update", orjson.dumps(msg))
