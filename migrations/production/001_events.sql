-- Production (RDS) schema: one copy of every exchange event. Units: see migrations/README.md.
-- `gatherer` names the gatherer whose copy was stored first; `received_at` is that gatherer's receive time.

CREATE TABLE trades (
    trade_id        uuid         NOT NULL,
    exchange_ts     bigint       NOT NULL,
    received_at     bigint       NOT NULL,
    ticker          varchar(128) NOT NULL,
    price           integer      NOT NULL,
    size            bigint       NOT NULL,
    taker_side      boolean      NOT NULL,
    is_block_trade  boolean      NOT NULL DEFAULT false,
    gatherer        varchar(64)  NOT NULL,
    PRIMARY KEY (trade_id, exchange_ts)
) {{partition:exchange_ts}};
{{timeseries:trades,exchange_ts,86400000000}}
CREATE INDEX IF NOT EXISTS idx_trades_ticker ON trades (ticker, exchange_ts DESC);

CREATE TABLE orderbook_deltas (
    exchange_ts     bigint       NOT NULL,
    received_at     bigint       NOT NULL,
    ticker          varchar(128) NOT NULL,
    side            boolean      NOT NULL,
    price           integer      NOT NULL,
    size_delta      bigint       NOT NULL,
    occurrence      integer      NOT NULL DEFAULT 0,
    gatherer        varchar(64)  NOT NULL,
    PRIMARY KEY (ticker, exchange_ts, side, price, size_delta, occurrence)
) {{partition:exchange_ts}};
{{timeseries:orderbook_deltas,exchange_ts,3600000000}}
CREATE INDEX IF NOT EXISTS idx_deltas_ticker_time ON orderbook_deltas (ticker, exchange_ts DESC);

-- Snapshots are observations, not exchange events: each gatherer's snapshot is kept (key includes gatherer).
CREATE TABLE orderbook_snapshots (
    snapshot_ts     bigint       NOT NULL,
    exchange_ts     bigint,
    ticker          varchar(128) NOT NULL,
    source          varchar(8)   NOT NULL,
    yes_bids        jsonb        NOT NULL,
    yes_asks        jsonb        NOT NULL,
    no_bids         jsonb        NOT NULL,
    no_asks         jsonb        NOT NULL,
    best_yes_bid    integer,
    best_yes_ask    integer,
    spread          integer,
    gatherer        varchar(64)  NOT NULL,
    PRIMARY KEY (ticker, snapshot_ts, source, gatherer)
) {{partition:snapshot_ts}};
{{timeseries:orderbook_snapshots,snapshot_ts,3600000000}}
CREATE INDEX IF NOT EXISTS idx_snapshots_ticker ON orderbook_snapshots (ticker, snapshot_ts DESC);

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
    gatherer             varchar(64)  NOT NULL,
    PRIMARY KEY (ticker, exchange_ts)
) {{partition:exchange_ts}};
{{timeseries:tickers,exchange_ts,3600000000}}
CREATE INDEX IF NOT EXISTS idx_tickers_ticker_time ON tickers (ticker, exchange_ts DESC);

CREATE TABLE lifecycle_events (
    exchange_ts     bigint       NOT NULL,
    received_at     bigint       NOT NULL,
    ticker          varchar(128) NOT NULL,
    event_type      varchar(64)  NOT NULL,
    payload         jsonb        NOT NULL,
    gatherer        varchar(64)  NOT NULL,
    PRIMARY KEY (ticker, event_type, exchange_ts)
) {{partition:exchange_ts}};
{{timeseries:lifecycle_events,exchange_ts,86400000000}}

CREATE TABLE sequence_gaps (
    gatherer        varchar(64)  NOT NULL,
    gap_id          bigint       NOT NULL,   -- the gatherer's own gap_id
    sid             bigint,
    ticker          varchar(128),
    reason          varchar(32)  NOT NULL,
    expected_seq    bigint,
    received_seq    bigint,
    from_ts         bigint       NOT NULL,
    to_ts           bigint,
    detected_at     bigint       NOT NULL,
    PRIMARY KEY (gatherer, gap_id)
);
CREATE INDEX IF NOT EXISTS idx_gaps_ticker ON sequence_gaps (ticker, from_ts);

-- Market metadata synced from REST by the deduplicator. `data` keeps the full API object.
CREATE TABLE series (
    ticker          varchar(128) PRIMARY KEY,
    title           text,
    category        text,
    frequency       text,
    data            jsonb        NOT NULL,
    updated_at      timestamptz  NOT NULL DEFAULT now()
);

CREATE TABLE events (
    event_ticker    varchar(128) PRIMARY KEY,
    series_ticker   varchar(128),
    title           text,
    sub_title       text,
    mutually_exclusive boolean,
    data            jsonb        NOT NULL,
    updated_at      timestamptz  NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS idx_events_series ON events (series_ticker);

CREATE TABLE markets (
    ticker          varchar(128) PRIMARY KEY,
    event_ticker    varchar(128),
    market_type     varchar(16),
    status          varchar(16),
    title           text,
    open_time       timestamptz,
    close_time      timestamptz,
    result          varchar(16),
    price_level_structure text,
    data            jsonb        NOT NULL,
    updated_at      timestamptz  NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS idx_markets_event ON markets (event_ticker);
CREATE INDEX IF NOT EXISTS idx_markets_status ON markets (status);

-- Sync cursors: per gatherer x table, the gatherer's xid watermark below which everything has been merged.
CREATE TABLE sync_cursors (
    gatherer        varchar(64)  NOT NULL,
    table_name      varchar(64)  NOT NULL,
    instance_id     uuid,                    -- gatherer_meta.instance_id the cursor belongs to
    xmin_cursor     bigint       NOT NULL DEFAULT 0,  -- xid8 as bigint
    rows_read       bigint       NOT NULL DEFAULT 0,
    rows_merged     bigint       NOT NULL DEFAULT 0,
    last_received_at bigint,                 -- newest received_at merged (us)
    updated_at      timestamptz  NOT NULL DEFAULT now(),
    PRIMARY KEY (gatherer, table_name)
);
