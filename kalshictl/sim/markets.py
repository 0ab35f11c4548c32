"""The market universe: series -> events -> markets, generated from a seed, with lazily created mutable state.

Static attributes of market ``i`` derive from a 64-bit hash of (seed, i), so 425,000 markets cost a few arrays, not
425,000 objects. A :class:`MarketState` (status, book, volume...) is created only when a market first changes.
Tickers: series ``KX{WORD}{s}``, event ``{series}-E{e}``, market ``{event}-T{k}``. A share (``mve_share``) of the
series are multivariate (combo) collections named ``KXMVE{WORD}{s}``: their markets trade like any other but their
lifecycle goes only to the ``multivariate_market_lifecycle`` channel.
"""

from __future__ import annotations

import random
from array import array
from bisect import bisect_right
from itertools import accumulate

from kalshictl import clock
from kalshictl.sim.book import Book

_M64 = (1 << 64) - 1
WORDS = (
    "BTC", "ETH", "HIGHNY", "HIGHCHI", "FED", "CPI", "NFL", "NBA", "SENATE", "RAIN", "GAS", "GDP",
    "SPX", "NASDAQ", "OSCAR", "MLB", "EURUSD", "TSA", "JOBS", "SNOW", "HOUSE", "NHL", "GOLD", "OIL",
)  # fmt: skip
CATEGORIES = ("Crypto", "Climate and Weather", "Economics", "Sports", "Politics", "Financials", "Entertainment")
FREQUENCIES = ("daily", "weekly", "monthly", "one-off", "hourly")
ACTIVE, INITIALIZED, INACTIVE, CLOSED, DETERMINED, FINALIZED = (
    "active", "initialized", "inactive", "closed", "determined", "finalized",
)  # fmt: skip
TRADING = frozenset((ACTIVE, INACTIVE))  # statuses whose books are non-empty


def mix64(x: int) -> int:
    """SplitMix64 finaliser: a fast, well-spread 64-bit hash."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def _status_of(h: int) -> str:
    """Initial status from a market hash: ~87% active, the rest initialized/inactive/closed/determined/finalized."""
    r = (h >> 20) & 1023
    if r < 870:
        return ACTIVE
    if r < 905:
        return INITIALIZED
    if r < 915:
        return INACTIVE
    if r < 955:
        return CLOSED
    if r < 975:
        return DETERMINED
    return FINALIZED


class MarketState:
    """Everything about a market that changes during a run."""

    __slots__ = (
        "book", "close_ts", "created_ts", "determination_ts", "dollar_volume", "last_price", "last_ticker_ms", "oi",
        "open_ts", "prev_price", "prev_yes_ask", "prev_yes_bid", "result", "settled_ts", "settlement_value",
        "status", "updated_ts", "volume",
    )  # fmt: skip

    def __init__(self) -> None:
        self.book = Book()
        self.status = ACTIVE
        self.result = ""
        self.created_ts = self.open_ts = self.close_ts = self.updated_ts = 0
        self.determination_ts = self.settled_ts = 0
        self.settlement_value = -1
        self.last_price = self.volume = self.oi = self.dollar_volume = 0
        self.prev_yes_bid = self.prev_price = 0
        self.prev_yes_ask = 10_000
        self.last_ticker_ms = 0


class Universe:
    """All series, events and markets of one run; market ``i`` is addressed by its index."""

    def __init__(self, n_markets: int, seed: int, anchor_ts: int | None = None, mve_share: float = 0.0) -> None:
        if n_markets < 1:
            raise ValueError("markets must be >= 1")
        self.seed = seed
        self.mve_share = mve_share
        self.anchor_ts = anchor_ts if anchor_ts is not None else clock.now_us() // 1_000_000 // 86400 * 86400
        self._key = mix64(seed * 0x100000001B3 + 0x51D)
        self.series_names: list[str] = []
        self.series_index: dict[str, int] = {}
        self.series_events: list[list[int]] = []
        self.ev_series = array("i")
        self.ev_first = array("i")
        self.ev_count = array("i")
        self.mk_event = array("i")
        self.states: dict[int, MarketState] = {}
        self._new_event_times: dict[int, tuple[int, int, int]] = {}  # events created during the run
        self._build(n_markets, random.Random(seed))

    # ----- construction -----------------------------------------------------------------------------------------
    def _build(self, n: int, rng: random.Random) -> None:
        sizes = (1, 1, 1, 2, 2, 3, 4, 5, 6, 8, 10, 12)
        while len(self.mk_event) < n:
            s = len(self.series_names)
            word = rng.choice(WORDS)
            name = f"KXMVE{word}{s}" if self._mve_series(s) else f"KX{word}{s}"
            self.series_names.append(name)
            self.series_index[name] = s
            self.series_events.append([])
            for _ in range(min(200, int(rng.paretovariate(0.9)))):
                remaining = n - len(self.mk_event)
                if remaining <= 0:
                    break
                self._append_event(s, min(remaining, rng.choice(sizes)))
        # busy markets: a Zipf-weighted few among the initially active ones
        active = [i for i in rng.sample(range(n), min(n, 4 * int(2 * n**0.5) + 8)) if self.initial_status(i) == ACTIVE]
        self.busy = active[: max(1, int(2 * n**0.5))]
        self.busy_set = frozenset(self.busy)
        self.busy_cum = list(accumulate(1.0 / (r + 1) ** 1.1 for r in range(len(self.busy))))

    def _mve_series(self, s: int) -> bool:
        """Whether series ``s`` is a multivariate collection (hash of (seed, s); never perturbs the RNG)."""
        return mix64(self._key ^ (s << 40) ^ 0x3E7) % 10_000 < self.mve_share * 10_000

    def is_mve(self, idx: int) -> bool:
        """Whether market ``idx`` is multivariate (``KXMVE...``)."""
        return self.series_names[self.ev_series[self.mk_event[idx]]].startswith("KXMVE")

    def is_mve_event(self, e: int) -> bool:
        """Whether event ``e`` is multivariate."""
        return self.series_names[self.ev_series[e]].startswith("KXMVE")

    def _append_event(self, s: int, m: int) -> int:
        e = len(self.ev_first)
        self.ev_series.append(s)
        self.ev_first.append(len(self.mk_event))
        self.ev_count.append(m)
        self.series_events[s].append(e)
        self.mk_event.extend([e] * m)
        return e

    def add_event(self, rng: random.Random, n_markets: int, now_s: int) -> tuple[int, list[int]]:
        """Create a new event with ``n_markets`` new markets (status initialized, empty books)."""
        s = rng.randrange(len(self.series_names))
        e = self._append_event(s, n_markets)
        close = now_s + 3600 * rng.randint(1, 24 * 30)
        self._new_event_times[e] = (now_s, now_s, close)
        first = self.ev_first[e]
        for idx in range(first, first + n_markets):
            st = MarketState()
            st.status = INITIALIZED
            st.created_ts = st.open_ts = st.updated_ts = now_s
            st.close_ts = close
            self.states[idx] = st
        return e, list(range(first, first + n_markets))

    def add_past_event(self, s: int, n_markets: int, created: int, close: int) -> list[int]:
        """Append an event of series ``s`` with ``n_markets`` markets that existed before the run (the history
        world, kalshictl/sim/history.py, fills in their states); returns the new market indexes."""
        e = self._append_event(s, n_markets)
        self._new_event_times[e] = (created, created, close)
        return list(self.event_markets(e))

    # ----- naming -----------------------------------------------------------------------------------------------
    @property
    def n_markets(self) -> int:
        """Current number of markets (grows as markets are created)."""
        return len(self.mk_event)

    @property
    def n_events(self) -> int:
        """Current number of events."""
        return len(self.ev_first)

    def event_ticker(self, e: int) -> str:
        """Ticker of event ``e``."""
        return f"{self.series_names[self.ev_series[e]]}-E{e}"

    def ticker(self, idx: int) -> str:
        """Ticker of market ``idx``."""
        e = self.mk_event[idx]
        return f"{self.series_names[self.ev_series[e]]}-E{e}-T{idx - self.ev_first[e]}"

    def market_id(self, idx: int) -> str:
        """Stable UUID-shaped id of market ``idx``."""
        h = f"{mix64(self._key ^ (idx << 1) ^ 0x1D):016x}{mix64(self._key + idx):016x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def index_of(self, ticker: str) -> int | None:
        """Market index of ``ticker``, or None if there is no such market."""
        parts = ticker.split("-")
        if len(parts) != 3 or not parts[1].startswith("E") or not parts[2].startswith("T"):
            return None
        try:
            e, k = int(parts[1][1:]), int(parts[2][1:])
        except ValueError:
            return None
        if not (0 <= e < len(self.ev_first) and 0 <= k < self.ev_count[e]):
            return None
        idx = self.ev_first[e] + k
        return idx if self.ticker(idx) == ticker else None

    def event_index(self, event_ticker: str) -> int | None:
        """Event index of ``event_ticker``, or None."""
        _, _, rest = event_ticker.rpartition("-")
        if not rest.startswith("E"):
            return None
        try:
            e = int(rest[1:])
        except ValueError:
            return None
        if 0 <= e < len(self.ev_first) and self.event_ticker(e) == event_ticker:
            return e
        return None

    def event_markets(self, e: int) -> range:
        """Market indexes of event ``e``."""
        first = self.ev_first[e]
        return range(first, first + self.ev_count[e])

    # ----- static attributes ------------------------------------------------------------------------------------
    def hash(self, idx: int) -> int:
        """64-bit hash of market ``idx`` (the source of all its static attributes)."""
        return mix64(self._key ^ idx)

    def event_hash(self, e: int) -> int:
        """64-bit hash of event ``e``."""
        return mix64(self._key ^ (e << 24) ^ 0xE7E)

    def tick(self, idx: int) -> int:
        """Price step: 10 (deci_cent, about 10% of markets) or 100 (linear_cent)."""
        return 10 if self.hash(idx) & 1023 < 100 else 100

    def fractional(self, idx: int) -> bool:
        """Whether this market trades fractional contracts (about 15% of markets)."""
        return (self.hash(idx) >> 10) & 1023 < 150

    def initial_status(self, idx: int) -> str:
        """Status at the start of the run."""
        return _status_of(self.hash(idx))

    def fair(self, idx: int) -> int:
        """A starting 'fair' yes price, tick aligned, within [0.05, 0.95]."""
        tick = self.tick(idx)
        p = 500 + (self.hash(idx) >> 30) % 9001
        return p - p % tick

    def event_times(self, e: int) -> tuple[int, int, int]:
        """(created, open, close) Unix seconds of event ``e``."""
        t = self._new_event_times.get(e)
        if t is not None:
            return t
        h = self.event_hash(e)
        created = self.anchor_ts - 3600 * (1 + h % 720)
        return created, created + 3600, self.anchor_ts + 3600 * (1 + (h >> 12) % 1440)

    def initial_book(self, idx: int, h: int | None = None) -> Book:
        """The book market ``idx`` starts with (small for idle markets, deeper for busy ones)."""
        if h is None:
            h = self.hash(idx)
        if _status_of(h) not in TRADING:
            return Book()
        tick = 10 if h & 1023 < 100 else 100
        frac = (h >> 10) & 1023 < 150
        fair = 500 + (h >> 30) % 9001
        fair -= fair % tick
        x = mix64(h ^ 0xB00C)
        busy = idx in self.busy_set
        ny, nn = (3 + (x & 7), 3 + ((x >> 3) & 7)) if busy else (x & 3, (x >> 2) & 3)
        spread = tick * (1 + ((x >> 6) & 3))
        unit = 5000 if busy else 500
        sides = []
        for n, top in ((ny, fair - spread), (nn, 10_000 - fair - spread)):
            levels: dict[int, int] = {}
            price = top
            for j in range(n):
                if price < tick:
                    break
                y = mix64(x + j * 7919 + top)
                levels[price] = 1 + y % (unit * 100) if frac else 100 * (1 + y % unit)
                price -= tick * (1 + ((y >> 40) & 1))
            sides.append(levels)
        return Book(sides[0], sides[1])

    # ----- mutable state ----------------------------------------------------------------------------------------
    def state(self, idx: int) -> MarketState:
        """The market's mutable state, created from its static attributes on first use."""
        st = self.states.get(idx)
        if st is None:
            st = self.states[idx] = self._initial_state(idx)
        return st

    def _initial_state(self, idx: int) -> MarketState:
        st = MarketState()
        h = self.hash(idx)
        st.status = _status_of(h)
        st.book = self.initial_book(idx, h)
        st.created_ts, st.open_ts, st.close_ts = self.event_times(self.mk_event[idx])
        st.updated_ts = st.created_ts
        if st.status in (CLOSED, DETERMINED, FINALIZED):
            st.close_ts = self.anchor_ts - 3600 * (1 + (h >> 40) % 48)
        if st.status in (DETERMINED, FINALIZED):
            st.result = "yes" if (h >> 44) & 1 else "no"
            st.settlement_value = 10_000 if st.result == "yes" else 0
            st.determination_ts = st.close_ts + 60
            if st.status == FINALIZED:
                st.settled_ts = st.close_ts + 360
        if st.status != INITIALIZED:
            frac = (h >> 10) & 1023 < 150
            st.volume = (1 + (h >> 45) % 100_000) * (1 if frac else 100)
            st.oi = st.volume * ((h >> 52) % 100) // 100
            if not frac:
                st.oi -= st.oi % 100
            tick = 10 if h & 1023 < 100 else 100
            fair = 500 + (h >> 30) % 9001
            st.last_price = fair - fair % tick
            st.dollar_volume = st.volume * st.last_price
            st.prev_price = st.last_price
            st.prev_yes_bid, _, st.prev_yes_ask, _ = st.book.top()
        return st

    def peek(self, idx: int) -> MarketState:
        """The market's state without storing it (for reads of idle markets)."""
        st = self.states.get(idx)
        return st if st is not None else self._initial_state(idx)

    def status(self, idx: int) -> str:
        """Current status of market ``idx``."""
        st = self.states.get(idx)
        return st.status if st is not None else self.initial_status(idx)

    def pick_busy(self, rng: random.Random) -> int:
        """A Zipf-weighted busy market."""
        cum = self.busy_cum
        return self.busy[bisect_right(cum, rng.random() * cum[-1])]
