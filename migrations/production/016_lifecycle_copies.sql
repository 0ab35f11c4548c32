-- Lifecycle identity by copies (issue #16 item 3, replacing the occurrence match of 015). Kalshi's lifecycle
-- messages carry no time of their own, and Kalshi repeats identical ones (same ticker, type and content); a gatherer
-- restarted between two repeats numbers them differently from its peers, so neither the occurrence nor a wide time
-- tolerance tells the copies of one message from a repeat. Production instead remembers which gatherer copy each
-- event absorbed: a gatherer's row is the same event as a production row with the same (ticker, event_type, digest)
-- and the same own time (timed messages) or a receive time within a few seconds (untimed), that no other row of
-- THAT gatherer has claimed yet (kalshictl/dedup/lifecycle_merge.py). One row per merged gatherer copy.
CREATE TABLE lifecycle_copies (
    gatherer         varchar(64)  NOT NULL,
    ticker           varchar(128) NOT NULL,
    event_type       varchar(64)  NOT NULL,
    digest           bytea        NOT NULL,
    copy_ts          bigint       NOT NULL,   -- the gatherer row's exchange_ts ...
    copy_occurrence  integer      NOT NULL,   -- ... and occurrence (its key in the gatherer's table)
    event_ts         bigint       NOT NULL,   -- the production row it is a copy of (exchange_ts, occurrence)
    event_occurrence integer      NOT NULL,
    PRIMARY KEY (gatherer, ticker, event_type, digest, copy_ts, copy_occurrence)
);
CREATE INDEX idx_lifecycle_copies_event ON lifecycle_copies (ticker, event_type, digest, event_ts);
-- events merged before this migration: each is the copy of the gatherer that stored it
INSERT INTO lifecycle_copies
SELECT gatherer, ticker, event_type, digest, exchange_ts, occurrence, exchange_ts, occurrence FROM lifecycle_events
ON CONFLICT DO NOTHING;
