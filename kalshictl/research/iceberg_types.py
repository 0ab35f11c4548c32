"""How a production table becomes an Iceberg table a reader understands (docs/research.md, "Iceberg tables").

Production stores exact integers (migrations/README.md): times in µs since the epoch, prices in 1e-4 USD, sizes in
1e-2 contracts, sides as booleans. The Iceberg tables carry the same values in the types every engine understands:

* every time column is ``timestamptz`` (Arrow ``timestamp[us, tz=UTC]``), the same microsecond;
* a price is ``decimal(P, 4)`` dollars and a size ``decimal(P, 2)`` contracts, exactly production's integer
  ÷ 10⁴ / 10² (the decimal's unscaled value *is* that integer: no arithmetic, no rounding);
* ``side``/``taker_side`` are the strings ``yes``/``no``; order-book levels are ``list<struct<price, size>>`` in
  those decimals; JSON payloads are JSON text, uuids text, digests binary.

Which columns are prices, sizes and times comes from :mod:`kalshictl.schema`; only the Iceberg rendering lives here.
The mapping runs both ways: :func:`to_iceberg_arrow` for the export, :func:`to_production_rows` for verification, and
:func:`row_checksum` hashes production's form of a row so both sides are compared on the stored integers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson

from kalshictl import schema
from kalshictl.schema import LEVELS_UNIT, PRICE_UNIT, SIZE_UNIT, TIME_UNIT

if TYPE_CHECKING:
    import pyarrow as pa
    from pyiceberg.schema import Schema

# Tables that hold the current state of the exchange's catalogue (no time of their own): each export replaces the
# whole table in one snapshot. Every table of the catalogue (kalshictl/schema.py) is partitioned by day(time column).
STATE_TABLES: tuple[str, ...] = ("series", "events", "markets")

TABLE_DOCS: dict[str, str] = {
    "series": "Kalshi series (a template of recurring events), synced from REST; data = the full API object",
    "events": "Kalshi events (a group of markets), synced from REST; data = the full API object",
    "markets": "Kalshi markets, synced from REST; data = the full API object",
    "trades": "Every trade, one row per trade_id (WebSocket trade channel, or REST backfill of a recorded gap)",
    "orderbook_deltas": "Every order-book change, one row per exchange event (occurrence numbers identical deltas)",
    "orderbook_snapshots": "Full order books observed by each gatherer (WebSocket snapshot or REST poll)",
    "tickers": "Market ticker updates (best prices, volume, open interest)",
    "lifecycle_events": "Market lifecycle messages (created, activated, closed, settled ...)",
    "sequence_gaps": "Windows in which a gatherer's subscription was not continuous: recorded loss, not quiet",
    "candlesticks": "Kalshi's candles (1 min, 1 h, 1 day) imported from its REST history (kalshictl history import)",
}

# What a column of a state table (or one the catalogue does not describe) means; the unit is added from its kind.
# The event and history tables' columns take their meaning from the catalogue (kalshictl/schema.py).
COLUMN_DOCS: dict[str, str] = {
    "exchange_ts": "the exchange's time of the event",
    "received_at": "when the gatherer received it",
    "snapshot_ts": "when the snapshot was taken",
    "from_ts": "start of the gap window",
    "to_ts": "end of the gap window (null = still open when exported)",
    "detected_at": "when the gatherer detected the gap",
    "ticker": "market ticker",
    "price": "price of the YES contract",
    "size": "number of contracts",
    "size_delta": "change of resting size at this price (negative = removed)",
    "side": "book side the change applies to",
    "taker_side": "side the taker bought",
    "yes_bid": "best YES bid",
    "yes_ask": "best YES ask",
    "last_price": "last traded YES price",
    "best_yes_bid": "best YES bid of the snapshot",
    "best_yes_ask": "best YES ask of the snapshot",
    "spread": "best YES ask minus best YES bid",
    "volume": "contracts traded since the market opened",
    "open_interest": "contracts outstanding",
    "yes_bid_size": "size at the best YES bid",
    "yes_ask_size": "size at the best YES ask",
    "last_trade_size": "size of the last trade",
    "dollar_volume": "volume in dollars as the exchange sends it (integer)",
    "dollar_open_interest": "open interest in dollars as the exchange sends it (integer)",
    "yes_bids": "YES bids, ascending by price",
    "yes_asks": "YES asks, ascending by price",
    "no_bids": "NO bids, ascending by price",
    "no_asks": "NO asks, ascending by price",
    "source": "where the row came from (ws = exchange stream, rest = REST poll/recovery)",
    "gatherer": "the gatherer that delivered the row production kept",
    "trade_id": "the exchange's trade id",
    "is_block_trade": "true for a block trade",
    "occurrence": "0, 1, 2 ... among identical rows of one market and time",
    "payload": "the message as JSON text",
    "digest": "SHA-256 of the message content (dedup key)",
    "event_type": "lifecycle message type",
    "tickers": "markets the window covers (null = every market of the channel)",
    "recovery": "none | pending | recovered | failed (REST backfill of the window)",
    "data": "the full REST API object as JSON text",
    "updated_at": "when production last synced this row",
}

SIDE_COLUMNS = frozenset({"side", "taker_side"})  # production boolean, true = YES
SKIP_COLUMNS = frozenset({"txid"})  # transaction bookkeeping of the sync (migrations/README.md), not data

# Decimal precision: enough digits for every value the production integer type can hold.
_DIGITS = {"integer": 10, "smallint": 5, "bigint": 19}


@dataclass(frozen=True)
class Column:
    """One production column and its Iceberg rendering. ``kind`` picks the conversion."""

    name: str
    pg_type: str
    kind: str  # time_us | timestamptz | price | size | side | levels | text | json | bool | int | long | float |
    #            binary | text_list
    doc: str

    @property
    def scale(self) -> int:
        return {"price": 4, "size": 2}.get(self.kind, 0)

    @property
    def precision(self) -> int:
        return _DIGITS.get(self.pg_type, 19)


def tables() -> list[str]:
    """Every exported table: the state tables, then the catalogue's event and history tables."""
    return [*STATE_TABLES, *schema.TABLES, *(t.name for t in schema.HISTORY_TABLES)]


def time_column(table: str) -> str | None:
    """The column whose UTC day partitions the table (None: a state table, replaced whole)."""
    return schema.time_column(table)


def _kind(name: str, pg_type: str) -> str:
    unit = schema.unit_of(name)
    if unit == LEVELS_UNIT:
        return "levels"
    if unit == TIME_UNIT and pg_type == "bigint":
        return "time_us"
    if unit == PRICE_UNIT and pg_type in _DIGITS:
        return "price"
    if unit == SIZE_UNIT and pg_type in _DIGITS:
        return "size"
    if name in SIDE_COLUMNS and pg_type == "boolean":
        return "side"
    return {
        "timestamp with time zone": "timestamptz",
        "boolean": "bool",
        "integer": "int",
        "smallint": "int",
        "bigint": "long",
        "double precision": "float",
        "bytea": "binary",
        "ARRAY": "text_list",
        "jsonb": "json",
        "json": "json",
    }.get(pg_type, "text")


_UNIT_DOCS = {
    "time_us": "UTC, microseconds",
    "timestamptz": "UTC, microseconds",
    "price": "USD, exact (production integer 1e-4 USD / 10^4)",
    "size": "contracts, exact (production integer 1e-2 contracts / 10^2)",
    "side": "yes | no",
    "levels": "list of (price USD decimal(10,4), size contracts decimal(19,2))",
}


def _catalogue_column(table: str, name: str) -> schema.Column | None:
    entry = schema.TABLES.get(table) or next((h for h in schema.HISTORY_TABLES if h.name == table), None)
    return entry.find(name) if entry is not None else None


def columns(table: str, pg_columns: Sequence[tuple[str, str]]) -> list[Column]:
    """The exported columns of a table from production's ``(name, data_type)`` list, in table order."""
    out = []
    for name, pg_type in pg_columns:
        if name in SKIP_COLUMNS:
            continue
        kind = _kind(name, pg_type)
        described = _catalogue_column(table, name)
        meaning = described.doc if described else COLUMN_DOCS.get(name, f"production column {table}.{name}")
        unit = _UNIT_DOCS.get(kind)
        out.append(Column(name, pg_type, kind, f"{meaning}; {unit}" if unit else meaning))
    return out


def iceberg_schema(cols: Sequence[Column]) -> Schema:
    """The Iceberg schema: typed columns with docs (field ids are reassigned by the catalog on create)."""
    from pyiceberg.schema import Schema
    from pyiceberg.types import (
        BinaryType,
        BooleanType,
        DecimalType,
        DoubleType,
        IntegerType,
        ListType,
        LongType,
        NestedField,
        StringType,
        StructType,
        TimestamptzType,
    )

    next_id = len(cols) + 1
    fields = []
    for i, col in enumerate(cols, start=1):
        if col.kind == "levels":
            price, size = next_id, next_id + 1
            element = StructType(
                NestedField(price, "price", DecimalType(10, 4), required=True, doc="USD"),
                NestedField(size, "size", DecimalType(19, 2), required=True, doc="contracts"),
            )
            typ: Any = ListType(next_id + 2, element, element_required=True)
            next_id += 3
        elif col.kind == "text_list":
            typ = ListType(next_id, StringType(), element_required=False)
            next_id += 1
        elif col.kind in ("price", "size"):
            typ = DecimalType(col.precision, col.scale)
        else:
            typ = {
                "time_us": TimestamptzType(),
                "timestamptz": TimestamptzType(),
                "side": StringType(),
                "bool": BooleanType(),
                "int": IntegerType(),
                "long": LongType(),
                "float": DoubleType(),
                "binary": BinaryType(),
                "json": StringType(),
                "text": StringType(),
            }[col.kind]
        fields.append(NestedField(i, col.name, typ, required=False, doc=col.doc))
    return Schema(*fields)


def select_sql(table: str, cols: Sequence[Column]) -> str:
    """SELECT of production's form of each column (JSON and uuids as text; levels as JSON), without a WHERE."""
    exprs = []
    for col in cols:
        if col.kind == "levels":
            exprs.append(col.name)
        elif col.kind in ("json", "text") and col.pg_type not in ("text", "character varying"):
            exprs.append(f"{col.name}::text")
        else:
            exprs.append(col.name)
    return f"SELECT {', '.join(exprs)} FROM {table}"


# -- production rows -> Iceberg Arrow ----------------------------------------------------------------------------


def _decimal(pa: Any, values: Any, precision: int, scale: int) -> pa.Array:
    """Integers -> decimal(precision, scale) whose unscaled value is the integer (exact: a reinterpretation)."""
    ints = values if isinstance(values, pa.Array) else pa.array(values, pa.int64())
    width = {5: pa.int16(), 10: pa.int32()}.get(precision, pa.int64())  # a cast Arrow knows always fits
    return ints.cast(width).cast(pa.decimal128(precision, 0)).view(pa.decimal128(precision, scale))


def arrow_type(col: Column) -> pa.DataType:
    """The Arrow type of a column as written (matches :func:`iceberg_schema`)."""
    import pyarrow as pa

    if col.kind == "levels":
        return pa.list_(
            pa.field(
                "element",
                pa.struct(
                    [
                        pa.field("price", pa.decimal128(10, 4), nullable=False),
                        pa.field("size", pa.decimal128(19, 2), nullable=False),
                    ]
                ),
                nullable=False,
            )
        )
    if col.kind in ("price", "size"):
        return pa.decimal128(col.precision, col.scale)
    return {
        "time_us": pa.timestamp("us", tz="UTC"),
        "timestamptz": pa.timestamp("us", tz="UTC"),
        "side": pa.string(),
        "bool": pa.bool_(),
        "int": pa.int32(),
        "long": pa.int64(),
        "float": pa.float64(),
        "binary": pa.binary(),
        "json": pa.string(),
        "text": pa.string(),
        "text_list": pa.list_(pa.string()),
    }[col.kind]


def _levels(pa: Any, values: Sequence[Any], typ: pa.DataType) -> pa.Array:
    offsets, prices, sizes = [0], [], []
    for levels in values:
        for price, size in levels:
            prices.append(int(price))
            sizes.append(int(size))
        offsets.append(len(prices))
    struct = pa.StructArray.from_arrays(
        [_decimal(pa, prices, 10, 4), _decimal(pa, sizes, 19, 2)], fields=list(typ.value_type)
    )
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), struct, type=typ)


def to_iceberg_arrow(rows: Sequence[tuple], cols: Sequence[Column]) -> pa.Table:
    """Production rows (as :func:`select_sql` returns them) -> an Arrow table in the Iceberg types."""
    import pyarrow as pa
    import pyarrow.compute as pc

    values = list(zip(*rows, strict=True)) if rows else [() for _ in cols]
    arrays = []
    for col, vals in zip(cols, values, strict=True):
        typ = arrow_type(col)
        if col.kind == "time_us":
            arrays.append(pa.array(vals, pa.int64()).cast(typ))
        elif col.kind in ("price", "size"):
            arrays.append(_decimal(pa, vals, col.precision, col.scale))
        elif col.kind == "side":
            arrays.append(pc.if_else(pa.array(vals, pa.bool_()), "yes", "no"))
        elif col.kind == "levels":
            arrays.append(_levels(pa, vals, typ))
        else:
            arrays.append(pa.array(vals, typ))
    schema = pa.schema([pa.field(c.name, arrow_type(c)) for c in cols])
    return pa.Table.from_arrays(arrays, schema=schema)


# -- Iceberg Arrow -> production's form (verification) -------------------------------------------------------------


def _unscaled(pa: Any, arr: Any) -> Any:
    """decimal(P, S) -> the integer production stored (its unscaled value)."""
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    return arr.view(pa.decimal128(arr.type.precision, 0)).cast(pa.int64())


def to_production_rows(table: pa.Table | pa.RecordBatch, cols: Sequence[Column]) -> Iterable[tuple]:
    """Arrow data read from Iceberg -> rows in production's form (integers, booleans, levels as lists)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    out = []
    for col in cols:
        arr = table.column(col.name)
        if col.kind in ("time_us", "timestamptz"):
            ints = arr.cast(pa.int64()).to_pylist()
            out.append(ints)
        elif col.kind in ("price", "size"):
            out.append(_unscaled(pa, arr).to_pylist())
        elif col.kind == "side":
            out.append(pc.equal(arr, "yes").to_pylist())
        elif col.kind == "levels":
            out.append(
                [
                    None if v is None else [[int(lv["price"].scaleb(4)), int(lv["size"].scaleb(2))] for lv in v]
                    for v in arr.to_pylist()
                ]
            )
        else:
            out.append(arr.to_pylist())
    return zip(*out, strict=True)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _canonical(value: Any, kind: str) -> Any:
    if value is None:
        return None
    if kind == "timestamptz" and isinstance(value, datetime):
        return (value - _EPOCH) // timedelta(microseconds=1)
    if kind == "binary":
        return bytes(value).hex()
    if kind == "levels":
        return [[int(p), int(s)] for p, s in value]
    return value


def row_checksum(rows: Iterable[tuple], cols: Sequence[Column]) -> tuple[int, str]:
    """(count, checksum) of rows in production's form: the sum mod 2⁶⁴ of each row's BLAKE2b-64 over its canonical
    JSON, so the order rows are read in does not matter and a changed, missing or extra row does."""
    special = [(i, c.kind) for i, c in enumerate(cols) if c.kind in ("timestamptz", "binary", "levels")]
    dumps, blake2b, from_bytes = orjson.dumps, hashlib.blake2b, int.from_bytes
    total = count = 0
    for row in rows:
        canonical: Sequence[Any] = row
        if special:
            values = list(row)
            for i, kind in special:
                values[i] = _canonical(values[i], kind)
            canonical = values
        total += from_bytes(blake2b(dumps(canonical), digest_size=8).digest(), "big")
        count += 1
    return count, f"{total & 0xFFFF_FFFF_FFFF_FFFF:016x}"
