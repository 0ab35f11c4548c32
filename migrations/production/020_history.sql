-- History imported from Kalshi's documented endpoints (kalshictl history import; docs/research.md, "History").
-- Trades gain a third source: 'historical' = GET /historical/trades or GET /markets/trades read by the importer
-- (the key stays trade_id, so a trade also recorded live is stored once, with the source stored first).
ALTER TABLE trades DROP CONSTRAINT IF EXISTS trades_source_check;
ALTER TABLE trades ALTER COLUMN source TYPE varchar(10);
ALTER TABLE trades ADD CONSTRAINT trades_source_check CHECK (source IN ('ws', 'rest', 'historical'));

-- One candle per (market, period, end of period). Prices in 1e-4 USD, counts in 1e-2 contracts, times in us since
-- the epoch (migrations/README.md, "Units"). price_* are NULL for a period without trades (as Kalshi sends them);
-- price_previous is the last trade price before the period. source: 'historical' (GET /historical/markets/{ticker}/
-- candlesticks) or 'live' (GET /markets/candlesticks, GET /series/{series}/markets/{ticker}/candlesticks).
CREATE TABLE candlesticks (
    ticker          varchar(128) NOT NULL,
    period_minutes  smallint     NOT NULL CHECK (period_minutes IN (1, 60, 1440)),
    end_ts          bigint       NOT NULL,
    yes_bid_open    integer      NOT NULL,
    yes_bid_low     integer      NOT NULL,
    yes_bid_high    integer      NOT NULL,
    yes_bid_close   integer      NOT NULL,
    yes_ask_open    integer      NOT NULL,
    yes_ask_low     integer      NOT NULL,
    yes_ask_high    integer      NOT NULL,
    yes_ask_close   integer      NOT NULL,
    price_open      integer,
    price_low       integer,
    price_high      integer,
    price_close     integer,
    price_mean      integer,
    price_previous  integer,
    volume          bigint       NOT NULL,
    open_interest   bigint       NOT NULL,
    source          varchar(10)  NOT NULL CHECK (source IN ('historical', 'live')),
    received_at     bigint       NOT NULL,
    PRIMARY KEY (ticker, period_minutes, end_ts)
);
CREATE INDEX idx_candlesticks_end ON candlesticks (end_ts);

-- Import checkpoints: one row per (endpoint, scope, range); scope names the market, series or selection and the
-- candle period. ``cursor`` is the next page to read; ``done`` the range is complete.
CREATE TABLE history_checkpoints (
    endpoint    varchar(64)  NOT NULL,
    scope       varchar(256) NOT NULL,
    range_from  bigint       NOT NULL,   -- Unix seconds, inclusive
    range_to    bigint       NOT NULL,   -- Unix seconds, exclusive
    cursor      text         NOT NULL DEFAULT '',
    done        boolean      NOT NULL DEFAULT false,
    rows        bigint       NOT NULL DEFAULT 0,
    rejected    bigint       NOT NULL DEFAULT 0,
    updated_at  timestamptz  NOT NULL DEFAULT now(),
    PRIMARY KEY (endpoint, scope, range_from, range_to)
);
