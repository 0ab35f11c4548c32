"""What the deduplicator syncs: per table, the production columns, the conflict key and the lag clock column."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TableSpec:
    """One synced table (same name in the gatherer and the production schema)."""

    name: str
    columns: tuple[str, ...]  # production columns except ``gatherer`` (all present in the gatherer table)
    conflict: tuple[str, ...]  # production primary key (exchange facts)
    clock: str  # the gatherer-clock column used for lag (microseconds)

    @property
    def prod_columns(self) -> tuple[str, ...]:
        return (*self.columns, "gatherer")


TRADES = TableSpec(
    "trades",
    ("trade_id", "exchange_ts", "received_at", "ticker", "price", "size", "taker_side", "is_block_trade"),
    ("trade_id", "exchange_ts"),
    "received_at",
)
DELTAS = TableSpec(
    "orderbook_deltas",
    ("exchange_ts", "received_at", "ticker", "side", "price", "size_delta", "occurrence"),
    ("ticker", "exchange_ts", "side", "price", "size_delta", "occurrence"),
    "received_at",
)
SNAPSHOTS = TableSpec(
    "orderbook_snapshots",
    (
        "snapshot_ts",
        "exchange_ts",
        "ticker",
        "source",
        "yes_bids",
        "yes_asks",
        "no_bids",
        "no_asks",
        "best_yes_bid",
        "best_yes_ask",
        "spread",
    ),
    ("ticker", "snapshot_ts", "source", "gatherer"),
    "snapshot_ts",
)
TICKERS = TableSpec(
    "tickers",
    (
        "exchange_ts",
        "received_at",
        "ticker",
        "yes_bid",
        "yes_ask",
        "last_price",
        "volume",
        "open_interest",
        "dollar_volume",
        "dollar_open_interest",
        "yes_bid_size",
        "yes_ask_size",
        "last_trade_size",
    ),
    ("ticker", "exchange_ts"),
    "received_at",
)
LIFECYCLE = TableSpec(
    "lifecycle_events",
    ("exchange_ts", "received_at", "ticker", "event_type", "payload"),
    ("ticker", "event_type", "exchange_ts"),
    "received_at",
)
GAPS = TableSpec(
    "sequence_gaps",
    ("gap_id", "sid", "ticker", "reason", "expected_seq", "received_seq", "from_ts", "to_ts", "detected_at"),
    ("gatherer", "gap_id"),
    "detected_at",
)

ALL_TABLES: tuple[TableSpec, ...] = (TRADES, DELTAS, SNAPSHOTS, TICKERS, LIFECYCLE, GAPS)
BY_NAME = {t.name: t for t in ALL_TABLES}
