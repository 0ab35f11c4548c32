"""The table catalogue: every fact about an event table, in one place.

Per event table: its typed columns (name, SQL type, meaning and unit), the gatherer-only columns its gatherer rows
carry, production's key, the column that places a row in time, the gatherer's clock, the COPY format between the
gatherer and production, how production merges the gatherers' copies, how the gatherer writes it and with how many
writers, and the NamedTuple of its gatherer row. The gatherer's writers, the deduplicator, the export and whatever
comes next read these facts here; a new table's facts go here (docs/architecture.md, migrations/README.md).

Must match ``migrations/*/001_events.sql`` and what follows it (``tests/test_schema.py`` checks names, types and keys
against migrated databases). Every gatherer table also has ``txid xid8 DEFAULT pg_current_xact_id()`` (the sync
watermark, migrations/README.md), never part of a row.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple

# What each number means (kalshictl/units.py converts Kalshi's strings to these; migrations/README.md "Units").
PRICE_UNIT, SIZE_UNIT, TIME_UNIT = "1e-4 USD", "1e-2 contracts", "us since epoch"
LEVELS_UNIT = f"[[price, size], ...]: price {PRICE_UNIT}, size {SIZE_UNIT}; ascending by price"


class Column(NamedTuple):
    """One column: its name, its SQL type (as in the migrations) and what it means; ``unit`` for numbers."""

    name: str
    sql: str
    doc: str
    unit: str = ""

    @property
    def levels(self) -> bool:
        """An order-book side: JSON ``[[price, size], ...]`` in integer units."""
        return self.unit == LEVELS_UNIT


class CopyFormat(enum.Enum):
    """How the deduplicator moves a table's rows from the gatherer into production's staging table."""

    BINARY = "BINARY"  # same types on both sides: no integer rendered as text and parsed back
    TEXT = "TEXT"  # low-volume tables whose gatherer and production shapes may differ in type while they evolve


class Merge(enum.Enum):
    """How production merges the gatherers' copies of a table (kalshictl/dedup/merge.py)."""

    FIRST_COPY = "first copy"  # INSERT ... ON CONFLICT (key) DO NOTHING: the first gatherer's copy is kept
    TRADE_ID = "trade id"  # one row per trade_id whatever its time; the WebSocket copy preferred over REST
    CLAIMED_COPIES = "claimed copies"  # one event = same (ticker, event_type, digest) within a tolerance
    UPSERT_WINDOW = "upsert window"  # a gap window is updated as it closes and recovers (key: the window)
    # exchange updates as FIRST_COPY; REST re-anchors (source 'rest') at most one per market per REST_ANCHOR_SPACING_US
    UPDATES_AND_ANCHORS = "updates and anchors"

    @property
    def serialized(self) -> bool:
        """The identity is not a unique key: the merge must see the other gatherers' committed rows, so merges of
        the table run one at a time."""
        return self in (Merge.TRADE_ID, Merge.CLAIMED_COPIES, Merge.UPDATES_AND_ANCHORS)


# Production keeps at most one REST re-anchor row (tickers.source = 'rest') per market within this span, whichever
# gatherer listed it first; the gatherers list the same markets after the same outage (migrations/README.md).
REST_ANCHOR_SPACING_US = 10_000_000


class GathererWrite(enum.Enum):
    """How a gatherer's writer puts a batch into its own table (kalshictl/gatherer/writers.py)."""

    DIRECT_FIRST = "direct first"  # duplicates rare: COPY straight in; staging + ON CONFLICT after one is met
    STAGED = "staged"  # always COPY into staging, then INSERT ... ON CONFLICT DO NOTHING
    APPEND = "append"  # no duplicates possible: COPY straight in


@dataclass(frozen=True)
class Table:
    """One event table, the same name in the gatherer and the production database."""

    name: str
    columns: tuple[Column, ...]  # in both databases, in row order
    extras: tuple[Column, ...]  # gatherer-only, appended to the gatherer's rows (its connection facts)
    key: tuple[str, ...]  # production's primary key
    time_column: str  # places a row in time (the export partitions by its UTC day)
    clock: str  # the gatherer's receive clock (us): commit lag, overflow windows, sync lag
    copy_format: CopyFormat
    merge: Merge
    gatherer_write: GathererWrite
    row: type[tuple]  # the NamedTuple of a gatherer row (``gatherer_columns`` order)
    writers: int = 1  # gatherer writers taking the rows in turns of one batch, each on its own connection
    sized: tuple[str, ...] = ()  # variable-size columns counted towards the writer's byte bound
    gap_screened: bool = False  # rows recorded around a gap wait for the gap-trust rule (kalshictl/dedup/gaps.py)
    lead: tuple[Column, ...] = ()  # gatherer row columns before ``columns`` (sequence_gaps: gatherer)

    @property
    def names(self) -> tuple[str, ...]:
        """The shared column names (what the deduplicator reads)."""
        return tuple(c.name for c in self.columns)

    @property
    def gatherer_columns(self) -> tuple[str, ...]:
        """A gatherer row's columns, in row order."""
        return tuple(c.name for c in (*self.lead, *self.columns, *self.extras))

    @property
    def production_columns(self) -> tuple[str, ...]:
        """The columns the deduplicator writes: the shared ones and the gatherer that sent the copy."""
        return (*self.names, "gatherer")

    @property
    def clock_index(self) -> int:
        return self.gatherer_columns.index(self.clock)

    @property
    def sized_indexes(self) -> tuple[int, ...]:
        cols = self.gatherer_columns
        return tuple(cols.index(n) for n in self.sized)

    def find(self, name: str) -> Column | None:
        """A column of either database by name; None for one the catalogue does not describe (a serial id)."""
        for c in (*self.lead, *self.columns, *self.extras, GATHERER):
            if c.name == name:
                return c
        return None


def _ts(name: str, doc: str) -> Column:
    return Column(name, "bigint", doc, TIME_UNIT)


def _price(name: str, doc: str) -> Column:
    return Column(name, "integer", doc, PRICE_UNIT)


def _size(name: str, doc: str) -> Column:
    return Column(name, "bigint", doc, SIZE_UNIT)


EXCHANGE_TS = _ts("exchange_ts", "the exchange's time of the event")
RECEIVED_AT = _ts("received_at", "when the gatherer received it (the first gatherer's copy in production)")
TICKER = Column("ticker", "varchar(128)", "market ticker")
SID = Column("sid", "bigint", "the WebSocket subscription id that carried it (gatherer only)")
SEQ = Column("seq", "bigint", "the subscription's sequence number (gatherer only)")
GATHERER = Column("gatherer", "varchar(64)", "the gatherer whose copy was stored (production)")
SOURCE = Column("source", "varchar(8)", "'ws' = the exchange's WebSocket stream; 'rest' = read from the REST API")
OCCURRENCE = Column("occurrence", "integer", "numbers identical events of one market in one exchange time (0 first)")


class TradeRow(NamedTuple):
    trade_id: str
    exchange_ts: int
    received_at: int
    ticker: str
    price: int
    size: int
    taker_side: bool
    is_block_trade: bool
    source: str
    sid: int | None


class DeltaRow(NamedTuple):
    exchange_ts: int
    received_at: int
    ticker: str
    side: bool
    price: int
    size_delta: int
    occurrence: int
    seq: int | None
    sid: int | None


class SnapshotRow(NamedTuple):
    snapshot_ts: int
    exchange_ts: int | None
    ticker: str
    source: str
    yes_bids: str
    yes_asks: str
    no_bids: str
    no_asks: str
    best_yes_bid: int | None
    best_yes_ask: int | None
    spread: int | None
    sid: int | None
    seq: int | None


class TickerRow(NamedTuple):
    exchange_ts: int
    received_at: int
    ticker: str
    yes_bid: int | None
    yes_ask: int | None
    last_price: int | None
    volume: int | None
    open_interest: int | None
    dollar_volume: int | None
    dollar_open_interest: int | None
    yes_bid_size: int | None
    yes_ask_size: int | None
    last_trade_size: int | None
    source: str
    occurrence: int
    sid: int | None


class LifecycleRow(NamedTuple):
    exchange_ts: int
    received_at: int
    ticker: str
    event_type: str
    payload: str
    digest: bytes
    occurrence: int
    sid: int | None


class GapRow(NamedTuple):
    gatherer: str
    instance_id: str
    window_id: int
    channel: str
    subscription: str | None
    sid: int | None
    tickers: list[str] | None
    reason: str
    expected_seq: int | None
    received_seq: int | None
    from_ts: int
    to_ts: int | None
    detected_at: int
    recovery: str


TRADES = Table(
    "trades",
    (
        Column("trade_id", "uuid", "the exchange's trade id"),
        EXCHANGE_TS,
        RECEIVED_AT,
        TICKER,
        _price("price", "YES price of the trade"),
        _size("size", "contracts traded"),
        Column("taker_side", "boolean", "the taker's side: true = YES"),
        Column("is_block_trade", "boolean", "a block trade"),
        SOURCE._replace(
            sql="varchar(10)",
            doc="'ws' = the trade channel; 'rest' = a REST backfill of a gap window; 'historical' = imported from"
            " Kalshi's REST history (kalshictl history import, production only)",
        ),
    ),
    (SID,),
    key=("trade_id", "exchange_ts"),
    time_column="exchange_ts",
    clock="received_at",
    copy_format=CopyFormat.BINARY,
    merge=Merge.TRADE_ID,
    gatherer_write=GathererWrite.DIRECT_FIRST,
    row=TradeRow,
    sized=("trade_id", "ticker"),
)
# Deltas are most of the rows and their keyed insert is the database's slowest: two writers on two connections take
# turns of one batch, so one batch is in the database while the next is encoded (x1.16 end to end, docs/performance.md).
DELTAS = Table(
    "orderbook_deltas",
    (
        EXCHANGE_TS,
        RECEIVED_AT,
        TICKER,
        Column("side", "boolean", "true = YES"),
        _price("price", "the level's price, this side's own leg"),
        _size("size_delta", "change of the level's resting size"),
        OCCURRENCE,
    ),
    (SEQ, SID),
    key=("ticker", "exchange_ts", "side", "price", "size_delta", "occurrence"),
    time_column="exchange_ts",
    clock="received_at",
    copy_format=CopyFormat.BINARY,
    merge=Merge.FIRST_COPY,
    gatherer_write=GathererWrite.DIRECT_FIRST,
    row=DeltaRow,
    writers=2,
    sized=("ticker",),
    gap_screened=True,
)
_LEVELS = "one side of the book at snapshot_ts"
SNAPSHOTS = Table(
    "orderbook_snapshots",
    (
        _ts("snapshot_ts", "when the gatherer took the snapshot"),
        EXCHANGE_TS._replace(doc="the exchange's time the snapshot reflects, when known"),
        TICKER,
        SOURCE._replace(doc="where the book came from: the WebSocket snapshot or the REST order book"),
        Column("yes_bids", "jsonb", f"{_LEVELS}: YES bids as sent", LEVELS_UNIT),
        Column("yes_asks", "jsonb", f"{_LEVELS}: NO bids seen from the YES side (10000 - p)", LEVELS_UNIT),
        Column("no_bids", "jsonb", f"{_LEVELS}: NO bids as sent", LEVELS_UNIT),
        Column("no_asks", "jsonb", f"{_LEVELS}: YES bids seen from the NO side (10000 - p)", LEVELS_UNIT),
        _price("best_yes_bid", "best YES bid"),
        _price("best_yes_ask", "best YES ask"),
        _price("spread", "best YES ask - best YES bid"),
    ),
    (SID, SEQ),
    key=("ticker", "snapshot_ts", "source", "gatherer"),  # observations: each gatherer's snapshot is kept
    time_column="snapshot_ts",
    clock="snapshot_ts",
    copy_format=CopyFormat.BINARY,
    merge=Merge.FIRST_COPY,
    gatherer_write=GathererWrite.DIRECT_FIRST,
    row=SnapshotRow,
    sized=("ticker", "yes_bids", "yes_asks", "no_bids", "no_asks"),
)
TICKERS = Table(
    "tickers",
    (
        EXCHANGE_TS,
        RECEIVED_AT,
        TICKER,
        _price("yes_bid", "best YES bid"),
        _price("yes_ask", "best YES ask"),
        _price("last_price", "last traded YES price"),
        _size("volume", "contracts traded since the market opened"),
        _size("open_interest", "contracts open"),
        Column("dollar_volume", "bigint", "volume in dollars, as the exchange sends it"),
        Column("dollar_open_interest", "bigint", "open interest in dollars, as the exchange sends it"),
        _size("yes_bid_size", "size at the best YES bid"),
        _size("yes_ask_size", "size at the best YES ask"),
        _size("last_trade_size", "size of the last trade"),
        SOURCE._replace(
            doc="'ws' = an exchange ticker update (exchange_ts: its time); 'rest' = a re-anchor from the REST market"
            " listing after a gap (exchange_ts = received_at: when the listing was received, shared by its rows)"
        ),
        OCCURRENCE._replace(doc="numbers the exchange updates of one market in one exchange ms, 0 first; REST: 0"),
    ),
    (SID,),
    key=("ticker", "exchange_ts", "source", "occurrence"),
    time_column="exchange_ts",
    clock="received_at",
    copy_format=CopyFormat.BINARY,
    merge=Merge.UPDATES_AND_ANCHORS,
    gatherer_write=GathererWrite.DIRECT_FIRST,
    row=TickerRow,
    sized=("ticker",),
)
LIFECYCLE = Table(
    "lifecycle_events",
    (
        EXCHANGE_TS._replace(doc="the message's own time, else its receive time (kalshictl/kalshi/lifecycle_key.py)"),
        RECEIVED_AT,
        TICKER._replace(doc="market ticker (event ticker for event_lifecycle)"),
        Column("event_type", "varchar(64)", "created, activated, deactivated, close_date_updated, determined, ..."),
        Column("payload", "jsonb", "the message as sent"),
        Column("digest", "bytea", "sha256 of the event's identity fields (kalshictl/kalshi/lifecycle_key.py)"),
        OCCURRENCE,
    ),
    (SID,),
    key=("ticker", "event_type", "digest", "occurrence", "exchange_ts"),
    time_column="exchange_ts",
    clock="received_at",
    copy_format=CopyFormat.TEXT,
    merge=Merge.CLAIMED_COPIES,
    gatherer_write=GathererWrite.STAGED,
    row=LifecycleRow,
    sized=("ticker", "event_type", "payload"),
)
# One row per subscription window (migrations/*/010_gap_windows.sql); both databases number them with their own
# gap_id, never part of a row. ``tickers`` NULL = every market of the channel. Written by GapLog (gatherer/gaps.py).
GAPS = Table(
    "sequence_gaps",
    (
        Column("instance_id", "text", "the gatherer process instance that opened the window"),
        Column("window_id", "bigint", "the window's number within its instance"),
        Column("channel", "varchar(32)", "the channel whose data is missing; '*' = every channel"),
        Column("subscription", "varchar(64)", "stable subscription name; NULL = gatherer-wide"),
        SID,
        Column("tickers", "text[]", "markets covered; NULL = every market of the channel"),
        Column("reason", "varchar(32)", "seq_gap, seq_backwards, disconnect, resnapshot, sub_error, overflow, ..."),
        Column("expected_seq", "bigint", "the sequence number expected"),
        Column("received_seq", "bigint", "the sequence number received"),
        _ts("from_ts", "last good data time"),
        _ts("to_ts", "when coverage resumed; NULL while open"),
        _ts("detected_at", "when the gatherer detected the window"),
        Column("recovery", "varchar(16)", "none, pending, recovered, failed (a REST backfill of the window)"),
    ),
    (),
    key=("gatherer", "instance_id", "window_id"),
    time_column="from_ts",
    clock="detected_at",
    copy_format=CopyFormat.TEXT,
    merge=Merge.UPSERT_WINDOW,
    gatherer_write=GathererWrite.APPEND,
    row=GapRow,
    sized=("gatherer", "channel", "subscription", "reason"),
    lead=(GATHERER,),
)

MARKET_DATA_TABLES: tuple[Table, ...] = (TRADES, DELTAS, SNAPSHOTS, TICKERS, LIFECYCLE)  # what the exchange did
EVENT_TABLES: tuple[Table, ...] = (*MARKET_DATA_TABLES, GAPS)  # and where the record of it has holes
TABLES: dict[str, Table] = {t.name: t for t in EVENT_TABLES}


def table(name: str) -> Table:
    """The catalogue entry of an event table; ``KeyError`` lists the known ones."""
    try:
        return TABLES[name]
    except KeyError:
        raise KeyError(f"unknown table {name!r} (one of {', '.join(TABLES)})") from None


# ----- production-only tables -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HistoryTable:
    """A production-only table written by ``kalshictl history import`` (docs/research.md, "History"): no gatherer
    copy, no merge; its rows come from Kalshi's REST history and say so in ``source``."""

    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    time_column: str

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def find(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)


OHLC = ("open", "low", "high", "close")


def _ohlc(prefix: str, what: str, *, nullable: str = "") -> tuple[Column, ...]:
    return tuple(
        _price(f"{prefix}_{p}", f"{what}: {p} of the period{nullable}") for p in ("open", "low", "high", "close")
    )


# migrations/production/020_history.sql: one candle per (market, period, end of period), as Kalshi computes it.
CANDLESTICKS = HistoryTable(
    "candlesticks",
    (
        TICKER,
        Column("period_minutes", "smallint", "the candle's period: 1, 60 or 1440 minutes", "minutes"),
        _ts("end_ts", "the inclusive end of the period"),
        *_ohlc("yes_bid", "best YES bid"),
        *_ohlc("yes_ask", "best YES ask"),
        *_ohlc("price", "YES trade price", nullable=" (NULL without trades)"),
        _price("price_mean", "mean YES trade price of the period (NULL without trades)"),
        _price("price_previous", "the last YES trade price before the period"),
        _size("volume", "contracts traded in the period"),
        _size("open_interest", "contracts open at the end of the period"),
        Column("source", "varchar(10)", "'historical' = GET /historical/...; 'live' = the live candlestick endpoints"),
        RECEIVED_AT._replace(doc="when the importer received the page"),
    ),
    key=("ticker", "period_minutes", "end_ts"),
    time_column="end_ts",
)
HISTORY_TABLES: tuple[HistoryTable, ...] = (CANDLESTICKS,)


def time_column(name: str) -> str | None:
    """The column whose UTC day places a row of table ``name`` in time (None: a state table such as ``markets``)."""
    t = TABLES.get(name) or next((h for h in HISTORY_TABLES if h.name == name), None)
    return t.time_column if t is not None else None


def unit_of(column: str) -> str:
    """The unit of a column name wherever the catalogue describes it (``""``: not a number with a unit). Names mean
    the same in every table, the state tables' (``markets.yes_bid``) included."""
    return _UNITS.get(column, "")


_UNITS: dict[str, str] = {
    c.name: c.unit
    for c in (
        *(c for t in EVENT_TABLES for c in (*t.lead, *t.columns, *t.extras)),
        *(c for t in HISTORY_TABLES for c in t.columns),
    )
    if c.unit in (PRICE_UNIT, SIZE_UNIT, TIME_UNIT, LEVELS_UNIT)
}
