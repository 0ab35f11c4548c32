-- Ticker re-anchors (issue #13 item 3): after a window on the ticker or lifecycle channel, each affected market is
-- read once from the REST market listing and stored as a ticker *snapshot* row (source 'rest', exchange_ts = when the
-- gatherer received the listing). 'ws' rows are exchange events; 'rest' rows are observations, like REST order-book
-- snapshots, and are not compared with the exchange's event stream.
ALTER TABLE tickers ADD COLUMN IF NOT EXISTS source varchar(8) NOT NULL DEFAULT 'ws';
ALTER TABLE tickers ADD CONSTRAINT tickers_source_check CHECK (source IN ('ws', 'rest'));
