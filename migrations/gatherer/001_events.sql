-- Gatherer (local TimescaleDB/PostgreSQL) schema. Units: see migrations/README.md.

CREATE TABLE IF NOT EXISTS gatherer_meta (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    instance_id uuid        NOT NULL DEFAULT gen_random_uuid(),
    created_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO gatherer_meta DEFAULT VALUES ON CONFLICT DO NOTHING;

-- Trades. Dedup key: trade_id (exchange_ts is functionally dependent on it; it is in the key because the table is
-- partitioned on it).
CREATE TABLE trades (
    trade_id        uuid         NOT NULL,
    exchange_ts     bigint       NOT NULL,
    received_at     bigint       NOT NULL,
    ticker          varchar(128) NOT NULL,
    price           integer      NOT NULL,   -- YES price, 1e-4 USD
    size            bigint       NOT NULL,   -- 1e-2 contracts
    taker_side      boolean      NOT NULL,   -- true = YES
    is_block_trade  boolean      NOT NULL DEFAULT false,
    sid             bigint,
    txid            xid8         NOT NULL DEFAULT pg_current_xact_id(),
    PRIMARY KEY (trade_id, exchange_ts)
) {{partition:exchange_ts}};
{{timeseries:trades,exchange_ts,86400000000}}
CREATE INDEX IF NOT EXISTS idx_trades_ticker ON trades (ticker, exchange_ts DESC);
CREATE INDEX IF NOT EXISTS idx_trades_txid ON trades (txid);

-- Order-book deltas. Dedup key: (ticker, exchange_ts, side, price, size_delta, occurrence); occurrence numbers
-- identical deltas of one market in one millisecond in this gatherer's ordered stream (ARCHITECTURE.md decision 3).
CREATE TABLE orderbook_deltas (
    exchange_ts     bigint       NOT NULL,
    received_at     bigint       NOT NULL,
    ticker          varchar(128) NOT NULL,
    side            boolean      NOT NULL,   -- true = YES
    price           integer      NOT NULL,   -- 1e-4 USD, this side's own leg price
    size_delta      bigint       NOT NULL,   -- signed, 1e-2 contracts
    occurrence      integer      NOT NULL DEFAULT 0,
    seq             bigint,
    sid             bigint,
    txid            xid8         NOT NULL DEFAULT pg_current_xact_id(),
    PRIMARY KEY (ticker, exchange_ts, side, price, size_delta, occurrence)
) {{partition:exchange_ts}};
{{timeseries:orderbook_deltas,exchange_ts,3600000000}}
CREATE INDEX IF NOT EXISTS idx_deltas_ticker_time ON orderbook_deltas (ticker, exchange_ts DESC);
CREATE INDEX IF NOT EXISTS idx_deltas_txid ON orderbook_deltas (txid);

-- Order-book snapshots: WebSocket (source 'ws') and REST (source 'rest').
CREATE TABLE orderbook_snapshots (
    snapshot_ts     bigint       NOT NULL,   -- when this gatherer received it
    exchange_ts     bigint,                  -- exchange time if known
    ticker          varchar(128) NOT NULL,
    source          varchar(8)   NOT NULL CHECK (source IN ('ws', 'rest')),
    yes_bids        jsonb        NOT NULL,
    yes_asks        jsonb        NOT NULL,
    no_bids         jsonb        NOT NULL,
    no_asks         jsonb        NOT NULL,
    best_yes_bid    integer,
    best_yes_ask    integer,
    spread          integer,
    sid             bigint,
    seq             bigint,
    txid            xid8         NOT NULL DEFAULT pg_current_xact_id(),
    PRIMARY KEY (ticker, snapshot_ts, source)
) {{partition:snapshot_ts}};
{{timeseries:orderbook_snapshots,snapshot_ts,3600000000}}
CREATE INDEX IF NOT EXISTS idx_snapshots_ticker ON orderbook_snapshots (ticker, snapshot_ts DESC);
CREATE INDEX IF NOT EXISTS idx_snapshots_txid ON orderbook_snapshots (txid);

-- Ticker updates. Dedup key: (ticker, exchange_ts).
CREATE TABLE tickers (
    exchange_ts          bigint       NOT NULL,
    received_at          bigint       NOT NULL,
    ticker               varchar(128) NOT NULL,
    yes_bid              integer,
    yes_ask              integer,
    last_price           integer,
    volume               bigint,
    open_interest        bigint,
    dollar_volume        bigint,
    dollar_open_interest bigint,
    yes_bid_size         bigint,
    yes_ask_size         bigint,
    last_trade_size      bigint,
    sid                  bigint,
    txid                 xid8         NOT NULL DEFAULT pg_current_xact_id(),
    PRIMARY KEY (ticker, exchange_ts)
) {{partition:exchange_ts}};
{{timeseries:tickers,exchange_ts,3600000000}}
CREATE INDEX IF NOT EXISTS idx_tickers_ticker_time ON tickers (ticker, exchange_ts DESC);
CREATE INDEX IF NOT EXISTS idx_tickers_txid ON tickers (txid);

-- Market and event lifecycle messages. Dedup key: (ticker, event_type, exchange_ts).
CREATE TABLE lifecycle_events (
    exchange_ts     bigint       NOT NULL,
    received_at     bigint       NOT NULL,
    ticker          varchar(128) NOT NULL,   -- market ticker (event ticker for event_lifecycle)
    event_type      varchar(64)  NOT NULL,
    payload         jsonb        NOT NULL,
    sid             bigint,
    txid            xid8         NOT NULL DEFAULT pg_current_xact_id(),
    PRIMARY KEY (ticker, event_type, exchange_ts)
) {{partition:exchange_ts}};
{{timeseries:lifecycle_events,exchange_ts,86400000000}}
CREATE INDEX IF NOT EXISTS idx_lifecycle_txid ON lifecycle_events (txid);

-- Gaps are data (decision 6): sequence gaps, disconnects, resnapshots, buffer overflows.
CREATE TABLE sequence_gaps (
    gap_id          bigserial    PRIMARY KEY,
    gatherer        varchar(64)  NOT NULL,
    sid             bigint,
    ticker          varchar(128),
    reason          varchar(32)  NOT NULL,   -- seq_gap | seq_backwards | disconnect | resnapshot | sub_error | overflow
    expected_seq    bigint,
    received_seq    bigint,
    from_ts         bigint       NOT NULL,   -- last good data time (us)
    to_ts           bigint,                  -- when coverage resumed (us), NULL while open
    detected_at     bigint       NOT NULL,
    txid            xid8         NOT NULL DEFAULT pg_current_xact_id()
);
CREATE INDEX IF NOT EXISTS idx_gaps_txid ON sequence_gaps (txid);
CREATE INDEX IF NOT EXISTS idx_gaps_ticker ON sequence_gaps (ticker, from_ts);
