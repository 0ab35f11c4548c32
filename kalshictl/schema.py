"""The event tables' shared columns and dedup keys, in one place.

Gatherer tables add their connection facts (``sid``, ``seq``) and ``txid``; production tables add ``gatherer``.
Must match ``migrations/*/001_events.sql`` (``tests/test_schema.py`` checks it against a migrated database).
"""

from __future__ import annotations

# The column that places a row of each table in time (export partitions by its UTC day).
TIME_COLUMN: dict[str, str] = {
    "trades": "exchange_ts",
    "orderbook_deltas": "exchange_ts",
    "orderbook_snapshots": "snapshot_ts",
    "tickers": "exchange_ts",
    "lifecycle_events": "exchange_ts",
    "sequence_gaps": "from_ts",
}

# What each number means, by column name in every table (kalshictl/units.py converts Kalshi's strings to these).
PRICE_UNIT, SIZE_UNIT, TIME_UNIT = "1e-4 USD", "1e-2 contracts", "us since epoch"
PRICE_COLUMNS = ("price", "yes_bid", "yes_ask", "last_price", "best_yes_bid", "best_yes_ask", "spread")
SIZE_COLUMNS = ("size", "size_delta", "volume", "open_interest", "yes_bid_size", "yes_ask_size", "last_trade_size")
TIME_US_COLUMNS = ("exchange_ts", "received_at", "snapshot_ts", "from_ts", "to_ts", "detected_at")
COLUMN_UNITS: dict[str, str] = {
    **dict.fromkeys(PRICE_COLUMNS, PRICE_UNIT),
    **dict.fromkeys(SIZE_COLUMNS, SIZE_UNIT),
    **dict.fromkeys(TIME_US_COLUMNS, TIME_UNIT),
}
LEVEL_COLUMNS = frozenset({"yes_bids", "yes_asks", "no_bids", "no_asks"})  # [[price, size], ...] in those units

EVENT_COLUMNS: dict[str, tuple[str, ...]] = {
    "trades": (
        "trade_id",
        "exchange_ts",
        "received_at",
        "ticker",
        "price",
        "size",
        "taker_side",
        "is_block_trade",
        "source",  # 'ws' | 'rest' (a REST backfill of a gap window)
    ),
    "orderbook_deltas": ("exchange_ts", "received_at", "ticker", "side", "price", "size_delta", "occurrence"),
    "orderbook_snapshots": (
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
    "tickers": (
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
        "source",  # 'ws' = a ticker update; 'rest' = a re-anchor from the REST market listing after a gap
    ),
    "lifecycle_events": ("exchange_ts", "received_at", "ticker", "event_type", "payload", "digest", "occurrence"),
}

# Production primary keys: exchange facts (ARCHITECTURE.md decision 3); snapshots are per-gatherer observations.
PRODUCTION_KEYS: dict[str, tuple[str, ...]] = {
    "trades": ("trade_id", "exchange_ts"),
    "orderbook_deltas": ("ticker", "exchange_ts", "side", "price", "size_delta", "occurrence"),
    "orderbook_snapshots": ("ticker", "snapshot_ts", "source", "gatherer"),
    "tickers": ("ticker", "exchange_ts"),
    # one event = same (ticker, event_type, digest) within a tolerance: the merge enforces it (lifecycle_key.py)
    "lifecycle_events": ("ticker", "event_type", "digest", "occurrence", "exchange_ts"),
    "sequence_gaps": ("gatherer", "instance_id", "window_id"),
}

# sequence_gaps (migrations/*/010_gap_windows.sql): one row per subscription window; production adds nothing but its
# own gap_id, the gatherer table its own gap_id and ``gatherer``. ``tickers`` NULL = every market of the channel.
GAP_COLUMNS = (
    "instance_id",
    "window_id",
    "channel",
    "subscription",
    "sid",
    "tickers",
    "reason",
    "expected_seq",
    "received_seq",
    "from_ts",
    "to_ts",
    "detected_at",
    "recovery",
)

# ----- candlesticks: one self-contained entry (migrations/production/020_history.sql) -------------------------------
# Written by ``kalshictl history import`` (docs/research.md, "History"); production only. Not yet in TIME_COLUMN or
# COLUMN_UNITS, so ``kalshictl export`` does not list it until the table catalogue takes this entry in.
CANDLESTICKS = {
    "table": "candlesticks",
    "columns": (
        "ticker", "period_minutes", "end_ts",
        "yes_bid_open", "yes_bid_low", "yes_bid_high", "yes_bid_close",
        "yes_ask_open", "yes_ask_low", "yes_ask_high", "yes_ask_close",
        "price_open", "price_low", "price_high", "price_close", "price_mean", "price_previous",
        "volume", "open_interest", "source", "received_at",
    ),
    "key": ("ticker", "period_minutes", "end_ts"),
    "time_column": "end_ts",  # the inclusive end of the period
    "units": {
        **dict.fromkeys(
            ("yes_bid_open", "yes_bid_low", "yes_bid_high", "yes_bid_close", "yes_ask_open", "yes_ask_low",
             "yes_ask_high", "yes_ask_close", "price_open", "price_low", "price_high", "price_close", "price_mean",
             "price_previous"),
            PRICE_UNIT,
        ),
        "volume": SIZE_UNIT,
        "open_interest": SIZE_UNIT,
        "end_ts": TIME_UNIT,
        "received_at": TIME_UNIT,
        "period_minutes": "minutes",
    },
}  # fmt: skip
