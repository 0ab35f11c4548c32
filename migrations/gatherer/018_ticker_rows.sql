-- Ticker rows that are what they say (migrations/README.md, "Tickers").
-- * A REST re-anchor row (source 'rest') carries the time its listing was received, shared by every row of that
--   listing; it no longer needs a made-up distinct microsecond to fit the key, because `source` is in the key.
-- * Exchange updates of one market in the same exchange millisecond are all kept, numbered 0, 1, 2 … in the order
--   the gatherer received them (`occurrence`, as identical order-book deltas are numbered); the k-th update of that
--   millisecond is the same row on every gatherer (an update identical to the one just before it is one update
--   delivered twice: same number). REST rows have occurrence 0.
ALTER TABLE tickers ADD COLUMN IF NOT EXISTS occurrence integer NOT NULL DEFAULT 0;
ALTER TABLE tickers DROP CONSTRAINT tickers_pkey;
ALTER TABLE tickers ADD PRIMARY KEY (ticker, exchange_ts, source, occurrence);
