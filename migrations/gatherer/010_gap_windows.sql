-- Compact gap windows (issue #12 item 4, #13): one row per subscription window instead of one per market, written
-- when the window opens (to_ts NULL) and closed by an UPDATE that also bumps txid so the deduplicator re-reads it.
-- `tickers` lists the markets a window covers (NULL = every market of the channel); channel '*' = every channel
-- (a restart). Old rows are converted: instance 'legacy', window_id = gap_id, their ticker as a one-element array.
CREATE TABLE sequence_gaps_v2 (
    gap_id          bigserial    PRIMARY KEY,
    gatherer        varchar(64)  NOT NULL,
    instance_id     text         NOT NULL,   -- the gatherer process instance that opened the window
    window_id       bigint       NOT NULL,   -- per instance
    channel         varchar(32)  NOT NULL,   -- orderbook_delta | ticker | trade | market_lifecycle_v2 | … | '*'
    subscription    varchar(64),             -- stable subscription name (e.g. ob-017/2); NULL = gatherer-wide
    sid             bigint,
    tickers         text[],                  -- markets covered; NULL = every market of the channel
    reason          varchar(32)  NOT NULL,   -- seq_gap | seq_backwards | disconnect | resnapshot | sub_error |
                                             -- overflow | restart | outage
    expected_seq    bigint,
    received_seq    bigint,
    from_ts         bigint       NOT NULL,   -- last good data time (us)
    to_ts           bigint,                  -- when coverage resumed (us), NULL while open
    detected_at     bigint       NOT NULL,
    recovery        varchar(16)  NOT NULL DEFAULT 'none'
                    CHECK (recovery IN ('none', 'pending', 'recovered', 'failed')),
    txid            xid8         NOT NULL DEFAULT pg_current_xact_id(),
    UNIQUE (gatherer, instance_id, window_id)
);
INSERT INTO sequence_gaps_v2 (gap_id, gatherer, instance_id, window_id, channel, subscription, sid, tickers, reason,
                              expected_seq, received_seq, from_ts, to_ts, detected_at, recovery, txid)
SELECT gap_id, gatherer, 'legacy', gap_id,
       CASE WHEN ticker IS NOT NULL THEN 'orderbook_delta' ELSE '*' END,
       NULL, sid, CASE WHEN ticker IS NULL THEN NULL ELSE ARRAY[ticker]::text[] END, reason,
       expected_seq, received_seq, from_ts, to_ts, detected_at, 'none', txid
FROM sequence_gaps;
SELECT setval(pg_get_serial_sequence('sequence_gaps_v2', 'gap_id'),
              GREATEST((SELECT max(gap_id) FROM sequence_gaps_v2), 1),
              (SELECT max(gap_id) FROM sequence_gaps_v2) IS NOT NULL);
DROP TABLE sequence_gaps;
ALTER TABLE sequence_gaps_v2 RENAME TO sequence_gaps;
ALTER INDEX sequence_gaps_v2_pkey RENAME TO sequence_gaps_pkey;
ALTER INDEX sequence_gaps_v2_gatherer_instance_id_window_id_key RENAME TO sequence_gaps_window_key;
ALTER SEQUENCE sequence_gaps_v2_gap_id_seq RENAME TO sequence_gaps_gap_id_seq;
CREATE INDEX IF NOT EXISTS idx_gaps_txid ON sequence_gaps (txid);
CREATE INDEX IF NOT EXISTS idx_gaps_time ON sequence_gaps (from_ts);
CREATE INDEX IF NOT EXISTS idx_gaps_tickers ON sequence_gaps USING gin (tickers);
CREATE INDEX IF NOT EXISTS idx_gaps_open ON sequence_gaps (gatherer) WHERE to_ts IS NULL;
