"""One replay: production's events of a period pushed through Kalshi's subscription model at a chosen speed.

:class:`RecordedFeed` is the recorded world's side of the protocol seam (``kalshictl.sim.world.SubscriptionFeed``): it
keeps books at the replay clock, answers ``orderbook_snapshot`` requests from them and fans each recorded event out
to the subscriptions of its channel with per-sid ``seq``. :class:`Session` owns the clock and the pump.

Books: a market's book is rebuilt with ``kalshictl book``'s point-in-time logic (``research.book_query.book_at``,
across production and the cold tier) the
first time the replay needs it (a subscribe, a REST call, or its first delta), then kept current by applying the
recorded deltas. Where every gatherer lost a market's order-book data (production gaps, as ``kalshictl coverage``
finds them) the replay does not invent continuity: at the window's end it rebuilds the book from production again and
sends subscribers a fresh ``orderbook_snapshot``, as Kalshi does after a resubscribe (docs/replay.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from itertools import islice
from typing import TYPE_CHECKING, Any

import orjson

from kalshictl import clock
from kalshictl.errors import KalshiCtlError
from kalshictl.replay import frames
from kalshictl.replay.source import DELTA, GAP_END, LIFECYCLE, TICKER, TRADE, Event
from kalshictl.research.book import Book
from kalshictl.research.book_query import book_at
from kalshictl.sim.subscriptions import ORDERBOOK, FrameSink, Sub, Subscriptions
from kalshictl.sim.subscriptions import TICKER as TICKER_CHANNEL
from kalshictl.sim.subscriptions import TRADE as TRADE_CHANNEL
from kalshictl.units import now_us

if TYPE_CHECKING:
    import psycopg

    from kalshictl.research.cold import ColdReader
    from kalshictl.sim.connection import Connection

CHUNK = 2_000  # events fetched from the cursors per thread hop
YIELD_EVERY = 256  # at max speed, events sent between two turns of the writers


class RecordedFeed(Subscriptions):
    """Subscriptions plus recorded books; ``clock_us`` is the replay clock (every event at or before it is sent)."""

    def __init__(
        self,
        conn: psycopg.Connection,
        from_us: int,
        on_subscribe: Callable[[Sub], None] | None = None,
        cold: ColdReader | None = None,
    ):
        super().__init__()
        self.conn = conn  # point reads (books); autocommit
        self.cold = cold  # order-book days that left production
        self.clock_us = from_us
        self.books: dict[str, Book] = {}
        self.on_subscribe = on_subscribe
        self.sent = 0  # frames queued
        self.shift_us = 0  # added to every message time (``Session(shift_to_now=True)``); books and clock stay recorded

    # ----- books ------------------------------------------------------------------------------------------------
    def book(self, ticker: str) -> Book:
        """``ticker``'s book at the replay clock (rebuilt from production the first time)."""
        book = self.books.get(ticker)
        if book is None:
            book = self.books[ticker] = self._rebuild(ticker, self.clock_us)
        return book

    def _rebuild(self, ticker: str, at_us: int) -> Book:
        try:
            return book_at(self.conn, ticker, at_us, cold=self.cold).book
        except KalshiCtlError:  # no snapshot recorded yet: the market's book starts empty
            return Book()

    # ----- protocol seam ----------------------------------------------------------------------------------------
    def register(self, sub: Sub) -> None:
        super().register(sub)
        if self.on_subscribe is not None:
            self.on_subscribe(sub)

    def snapshot(self, sub: Sub, key: str, consume: bool = True) -> None:
        """Send ``orderbook_snapshot`` of market ``key`` (its ticker) at the replay clock to ``sub``."""
        if consume or sub.seq == 0:
            sub.seq += 1
        body = frames.snapshot_body(key, self.book(key), sub.yes_price)
        self._send(sub.conn, b'{"type":"orderbook_snapshot","sid":%d,"seq":%d,"msg":%b}' % (sub.sid, sub.seq, body))

    def _send(self, conn: FrameSink, frame: bytes) -> None:
        if not conn.closed:
            conn.send(frame)
            self.sent += 1

    # ----- events -----------------------------------------------------------------------------------------------
    def emit(self, event: Event) -> None:
        """Apply one recorded event to the books and send it to its subscribers."""
        ts, kind, row = event
        if kind == DELTA:
            _, ticker, side, price, size_delta = row
            if ticker not in self.books:
                self.books[ticker] = self._rebuild(ticker, ts - 1)
            self.books[ticker].apply(side, price, size_delta)
            subs = self.by_ticker[ORDERBOOK].get(ticker)
            if not subs:
                return
            body = body_yes = None
            for sub in list(subs):
                if sub.yes_price and not side:
                    body_yes = body_yes or frames.delta_body(ticker, side, price, size_delta, ts + self.shift_us, True)
                    b = body_yes
                else:
                    body = body or frames.delta_body(ticker, side, price, size_delta, ts + self.shift_us)
                    b = body
                sub.seq += 1
                self._send(sub.conn, b'{"type":"orderbook_delta","sid":%d,"seq":%d,"msg":%b}' % (sub.sid, sub.seq, b))
        elif kind == TRADE:
            self._fan(TRADE_CHANNEL, "trade", row[2], lambda: frames.trade_body(row, self.shift_us))
        elif kind == TICKER:
            self._fan(TICKER_CHANNEL, "ticker", row[1], lambda: frames.ticker_body(row, self.shift_us))
        elif kind == LIFECYCLE:
            _, ticker, event_type, payload = row
            channel, mtype = frames.lifecycle_route(ticker, event_type)
            subs = self.all[channel]
            if subs:
                body = orjson.dumps(payload)
                for sub in list(subs):
                    self._send(sub.conn, b'{"type":"%b","sid":%d,"msg":%b}' % (mtype.encode(), sub.sid, body))
        elif kind == GAP_END:
            self._resnapshot(row[0], ts)

    def _fan(self, channel: str, mtype: str, ticker: str, body: Callable[[], bytes]) -> None:
        subs = self._ticker_subs(channel, ticker)
        if not subs:
            return
        b = body()
        for sub in subs:
            self._send(sub.conn, b'{"type":"%b","sid":%d,"msg":%b}' % (mtype.encode(), sub.sid, b))

    def _resnapshot(self, ticker: str, at_us: int) -> None:
        """After an unrecorded window: rebuild the book(s) from production and send fresh snapshots."""
        tickers = list(self.books) if ticker == "*" else [ticker]
        subscribed = set(self.by_ticker[ORDERBOOK]) if ticker == "*" else {ticker}
        for t in sorted(set(tickers) | subscribed):
            self.books[t] = self._rebuild(t, at_us)
            for sub in list(self.by_ticker[ORDERBOOK].get(t, ())):
                self.snapshot(sub, t)


class Session:
    """The pump: events from ``source`` into ``feed`` as the clock passes their exchange time.

    Time is the one clock (``kalshictl.clock``: wall time, or faster for tests and the soak); ``speed`` multiplies it.

    ``speed`` None = as fast as the clients read (the pump waits while any client's queue is above ``high_water``
    bytes); otherwise exchange time runs ``speed`` times faster than wall time, and a client that cannot keep up
    overflows its bounded queue and is disconnected (``kalshictl.sim.connection``). ``shift_to_now`` moves every
    message time by one whole number of milliseconds so that ``from_us`` is the wall-clock moment the clock starts
    (for a pipeline whose gatherers compare exchange times with their own clock; docs/replay.md).
    """

    def __init__(
        self,
        feed: RecordedFeed,
        source: Iterator[Event],
        from_us: int,
        to_us: int,
        speed: float | None,
        connections: Callable[[], list[Connection]],
        high_water: int = 4 * 1024 * 1024,
        monotonic: Callable[[], float] = clock.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = clock.sleep,
        shift_to_now: bool = False,
        wall_us: Callable[[], int] = now_us,
    ) -> None:
        self.feed = feed
        self.source = source
        self.from_us = from_us
        self.to_us = to_us
        self.speed = speed
        self.connections = connections
        self.high_water = high_water
        self.monotonic = monotonic
        self.sleep = sleep
        self.shift_to_now = shift_to_now
        self.wall_us = wall_us
        self.started = asyncio.Event()
        self.finished = asyncio.Event()
        self.events = 0
        self._t0: float | None = None
        self._yielded = 0

    @property
    def clock_us(self) -> int:
        """The replay clock: exchange time of the last event sent, or further while waiting for the next one."""
        sent = self.feed.clock_us
        if self._t0 is None or self.speed is None or self.finished.is_set():
            return sent
        paced = self.from_us + int((self.monotonic() - self._t0) * self.speed * 1e6)
        return max(sent, min(paced, self.to_us))

    def _chunk(self) -> list[Event]:
        return list(islice(self.source, CHUNK))

    async def run(self, on_batch: Callable[[int], Any] | None = None) -> None:
        """Wait for :attr:`started`, then send every event; ``on_batch(ts)`` (awaitable or not) after each timestamp."""
        try:
            pending = asyncio.ensure_future(asyncio.to_thread(self._chunk))  # the first chunk is read before the start
            await pending
            await self.started.wait()
            self._t0 = self.monotonic()
            if self.shift_to_now:
                self.feed.shift_us = (self.wall_us() - self.from_us) // 1000 * 1000
            while True:
                chunk = await pending
                if not chunk:
                    break
                pending = asyncio.ensure_future(asyncio.to_thread(self._chunk))  # prefetch while sending
                await self._send_chunk(chunk, on_batch)
            self.feed.clock_us = self.to_us
        finally:
            self.finished.set()

    async def _send_chunk(self, chunk: list[Event], on_batch: Callable[[int], Any] | None) -> None:
        feed = self.feed
        i, n = 0, len(chunk)
        while i < n:
            ts = chunk[i][0]
            if self.speed is not None:
                assert self._t0 is not None
                delay = self._t0 + (ts - self.from_us) / 1e6 / self.speed - self.monotonic()
                if delay > 0:
                    await self.sleep(delay)
                    self._yielded = self.events
                elif self.events - self._yielded >= YIELD_EVERY:  # behind the clock: still let the writers run
                    self._yielded = self.events
                    await asyncio.sleep(0)
            else:
                await self._backpressure()
            feed.clock_us = ts
            while i < n and chunk[i][0] == ts:
                feed.emit(chunk[i])
                i += 1
                self.events += 1
            if on_batch is not None:
                result = on_batch(ts)
                if asyncio.iscoroutine(result):
                    await result

    async def _backpressure(self) -> None:
        """At ``max`` speed: let the writers run every :data:`YIELD_EVERY` events, and wait while a client's queue is
        above the high-water mark."""
        if self.events - self._yielded < YIELD_EVERY:
            return
        self._yielded = self.events
        await asyncio.sleep(0)
        while any(c.queued_bytes > self.high_water and not c.closed for c in self.connections()):
            await asyncio.sleep(0.001)
