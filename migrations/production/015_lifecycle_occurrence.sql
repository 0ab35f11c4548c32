-- Identical lifecycle messages in a burst (issue #16 item 3). Kalshi repeats `deactivated` / `metadata_updated` for a
-- market with the same content and no time of its own, sometimes within a second. Each gatherer numbers identical
-- messages (same ticker, event type and content digest) that follow each other within the lifecycle tolerance:
-- 0, 1, 2 … (kalshictl/kalshi/lifecycle_key.py, Occurrences). The k-th copy on every gatherer is the same event, as
-- the occurrence of identical order-book deltas is; production's merge matches on it.
ALTER TABLE lifecycle_events ADD COLUMN IF NOT EXISTS occurrence integer NOT NULL DEFAULT 0;
ALTER TABLE lifecycle_events DROP CONSTRAINT lifecycle_events_pkey;
ALTER TABLE lifecycle_events ADD PRIMARY KEY (ticker, event_type, digest, occurrence, exchange_ts);
