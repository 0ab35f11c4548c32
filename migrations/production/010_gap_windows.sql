-- Compact gap windows (issue #12 item 4, #13): production keeps one row per gatherer window, keyed by
-- (gatherer, instance_id, window_id) and upserted each time the gatherer's row changes (open, close, recovery).
-- Old rows are converted: instance 'legacy', window_id = the gatherer's own gap_id (production stored it plus an
-- offset that is a multiple of 2^40, gatherer ids stay below 2^40).
CREATE TABLE sequence_gaps_v2 (
    gap_id          bigserial    UNIQUE,
    gatherer        varchar(64)  NOT NULL,
    instance_id     text         NOT NULL,
    window_id       bigint       NOT NULL,
    channel         varchar(32)  NOT NULL,
    subscription    varchar(64),
    sid             bigint,
    tickers         text[],
    reason          varchar(32)  NOT NULL,
    expected_seq    bigint,
    received_seq    bigint,
    from_ts         bigint       NOT NULL,
    to_ts           bigint,
    detected_at     bigint       NOT NULL,
    recovery        varchar(16)  NOT NULL DEFAULT 'none'
                    CHECK (recovery IN ('none', 'pending', 'recovered', 'failed')),
    txid            xid8         NOT NULL DEFAULT pg_current_xact_id(),
    PRIMARY KEY (gatherer, instance_id, window_id)
);
INSERT INTO sequence_gaps_v2 (gatherer, instance_id, window_id, channel, subscription, sid, tickers, reason,
                              expected_seq, received_seq, from_ts, to_ts, detected_at)
SELECT gatherer, 'legacy', gap_id % (1::bigint << 40),
       CASE WHEN ticker IS NOT NULL THEN 'orderbook_delta' ELSE '*' END,
       NULL, sid, CASE WHEN ticker IS NULL THEN NULL ELSE ARRAY[ticker]::text[] END, reason,
       expected_seq, received_seq, from_ts, to_ts, detected_at
FROM sequence_gaps
ORDER BY gatherer, gap_id;
DROP TABLE sequence_gaps;
ALTER TABLE sequence_gaps_v2 RENAME TO sequence_gaps;
ALTER INDEX sequence_gaps_v2_pkey RENAME TO sequence_gaps_pkey;
ALTER INDEX sequence_gaps_v2_gap_id_key RENAME TO sequence_gaps_gap_id_key;
ALTER SEQUENCE sequence_gaps_v2_gap_id_seq RENAME TO sequence_gaps_gap_id_seq;
CREATE INDEX IF NOT EXISTS idx_gaps_time ON sequence_gaps (from_ts);
CREATE INDEX IF NOT EXISTS idx_gaps_tickers ON sequence_gaps USING gin (tickers);
