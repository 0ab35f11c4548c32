-- Lifecycle key (issue #16 item 3): messages without a time of their own are stored at their receive time, so the
-- key gains a digest of the canonical content (kalshictl/kalshi/lifecycle_key.py). Existing rows get a digest of their
-- stored content (not byte-identical to the Python digest; only rows written from now on are compared by it).
ALTER TABLE lifecycle_events ADD COLUMN IF NOT EXISTS digest bytea;
UPDATE lifecycle_events SET digest = sha256(convert_to(event_type || '|' || ticker || '|' || payload::text, 'UTF8'))
WHERE digest IS NULL;
ALTER TABLE lifecycle_events ALTER COLUMN digest SET NOT NULL;
ALTER TABLE lifecycle_events DROP CONSTRAINT lifecycle_events_pkey;
ALTER TABLE lifecycle_events ADD PRIMARY KEY (ticker, event_type, digest, exchange_ts);
CREATE INDEX IF NOT EXISTS idx_lifecycle_ticker_time ON lifecycle_events (ticker, exchange_ts);
