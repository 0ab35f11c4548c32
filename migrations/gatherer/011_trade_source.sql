-- Where a trade row came from (issue #13 item 1): 'ws' = the trade channel, 'rest' = a REST backfill of a gap window
-- (GET /markets/trades). The dedup key stays trade_id; production keeps the source of the copy stored first.
ALTER TABLE trades ADD COLUMN IF NOT EXISTS source varchar(8) NOT NULL DEFAULT 'ws';
ALTER TABLE trades ADD CONSTRAINT trades_source_check CHECK (source IN ('ws', 'rest'));
CREATE INDEX IF NOT EXISTS idx_trades_trade_id ON trades (trade_id);
