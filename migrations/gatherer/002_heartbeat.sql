-- Coverage heartbeat: the gatherer keeps `last_alive_us` at a time before which everything it received is committed.
-- On start it records the window (last_alive_us, coverage resumed] as a `restart` gap, so an outage of the gatherer
-- itself — a crash or kill -9 included — is data in sequence_gaps like any other gap.
ALTER TABLE gatherer_meta ADD COLUMN IF NOT EXISTS last_alive_us bigint;
