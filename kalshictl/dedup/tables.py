"""What the deduplicator syncs: per table, the production columns, the conflict key and the lag clock column."""

from __future__ import annotations

from dataclasses import dataclass

from kalshictl.schema import EVENT_COLUMNS, GAP_COLUMNS, PRODUCTION_KEYS


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


TRADES = TableSpec("trades", EVENT_COLUMNS["trades"], PRODUCTION_KEYS["trades"], "received_at")
DELTAS = TableSpec(
    "orderbook_deltas", EVENT_COLUMNS["orderbook_deltas"], PRODUCTION_KEYS["orderbook_deltas"], "received_at"
)
SNAPSHOTS = TableSpec(
    "orderbook_snapshots", EVENT_COLUMNS["orderbook_snapshots"], PRODUCTION_KEYS["orderbook_snapshots"], "snapshot_ts"
)
TICKERS = TableSpec("tickers", EVENT_COLUMNS["tickers"], PRODUCTION_KEYS["tickers"], "received_at")
LIFECYCLE = TableSpec(
    "lifecycle_events", EVENT_COLUMNS["lifecycle_events"], PRODUCTION_KEYS["lifecycle_events"], "received_at"
)
# gap windows: production keys them by (gatherer, instance_id, window_id) and has its own gap_id
GAPS = TableSpec("sequence_gaps", GAP_COLUMNS, PRODUCTION_KEYS["sequence_gaps"], "detected_at")

ALL_TABLES: tuple[TableSpec, ...] = (TRADES, DELTAS, SNAPSHOTS, TICKERS, LIFECYCLE, GAPS)
BY_NAME = {t.name: t for t in ALL_TABLES}
