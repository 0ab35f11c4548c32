-- The production ledger of the cold tier (docs/deduplicator.md, "Cold tier and production retention").
-- One row per (table, UTC day) exported to S3: what production held when it was exported (row count and a
-- fingerprint of every row's text), what was read back from S3 after the upload (row count and a content checksum
-- of the typed rows), where it lives, and when it was verified and dropped from production.
CREATE TABLE IF NOT EXISTS cold_exports (
    table_name    text    NOT NULL,
    day           date    NOT NULL,
    rows          bigint  NOT NULL,            -- production rows of the day in the exported snapshot
    fingerprint   text    NOT NULL,            -- kalshi_day_fingerprint() of those rows
    cold_rows     bigint,                      -- rows read back from the cold tier after the upload
    checksum      text,                        -- content checksum of the rows read back (docs/deduplicator.md)
    location      text    NOT NULL,            -- manifest key / Iceberg metadata location
    snapshot_id   bigint,                      -- Iceberg snapshot of this export (NULL for plain Parquet)
    format        text    NOT NULL,
    exports       integer NOT NULL DEFAULT 1,  -- how many times this day was exported (late rows re-export it)
    exported_at   bigint  NOT NULL,            -- µs, the one clock (kalshictl/clock.py)
    verified_at   bigint,                      -- NULL until the read-back matched; reset when production changed
    dropped_at    bigint,                      -- production partitions of the day dropped (rows live only in S3)
    PRIMARY KEY (table_name, day)
);

-- Row count and an order-independent fingerprint (sum of the first 64 bits of md5(row text)) of one table's rows
-- with time in [from_us, to_us). Read-only; run as the caller.
CREATE OR REPLACE FUNCTION kalshi_day_fingerprint(tbl text, from_us bigint, to_us bigint,
                                                  OUT rows bigint, OUT fingerprint text)
LANGUAGE plpgsql STABLE
SET search_path = public, pg_temp
AS $$
DECLARE
    tcol text;
BEGIN
    SELECT time_column INTO tcol FROM kalshi_timeseries WHERE table_name = tbl;
    IF tcol IS NULL THEN
        RAISE EXCEPTION 'kalshi_day_fingerprint: % is not a time-series table', tbl;
    END IF;
    EXECUTE format('SELECT count(*), COALESCE(sum((''x'' || substr(md5(t::text), 1, 16))::bit(64)::bigint::numeric), 0)::text'
                   ' FROM %I t WHERE %I >= $1 AND %I < $2', tbl, tcol, tcol)
        INTO rows, fingerprint USING from_us, to_us;
END
$$;

-- Drop one table-day from production, as the owner, only if the ledger holds a verified export of it and production
-- still holds exactly what was exported. Under an exclusive lock on the day's partitions (writers of late rows wait)
-- the day is fingerprinted again: if it changed since the export, the ledger row loses its verification and nothing
-- is dropped (returns -1; the next export run re-exports the day). Otherwise every partition lying inside the day is
-- dropped, rows of the day in the default partition are deleted, the ledger row gets dropped_at, and the number of
-- partitions dropped is returned. A day dropped before whose partitions exist again is dropped again only while
-- empty. Only the deduplicator may call it (granted below).
CREATE OR REPLACE FUNCTION kalshi_drop_exported_day(tbl text, d date, now_us bigint)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    ts       kalshi_timeseries%ROWTYPE;
    ledger   cold_exports%ROWTYPE;
    lo       bigint := (d - date '1970-01-01')::bigint * 86400000000;
    hi       bigint := lo + 86400000000;
    chunk_no bigint;
    pname    text;
    parts    text[] := '{}';
    fp       record;
BEGIN
    PERFORM set_config('lock_timeout', '5s', true);
    SELECT * INTO ts FROM kalshi_timeseries WHERE table_name = tbl;
    IF NOT FOUND OR ts.flavor <> 'partitioned' THEN
        RAISE EXCEPTION 'kalshi_drop_exported_day: % is not a partitioned time-series table', tbl;
    END IF;
    IF 86400000000 % ts.chunk_us <> 0 THEN
        RAISE EXCEPTION 'kalshi_drop_exported_day: % chunks (% µs) do not divide a day', tbl, ts.chunk_us;
    END IF;
    SELECT * INTO ledger FROM cold_exports WHERE table_name = tbl AND day = d FOR UPDATE;
    IF NOT FOUND OR (ledger.verified_at IS NULL AND ledger.dropped_at IS NULL) THEN
        RAISE EXCEPTION 'kalshi_drop_exported_day: no verified export of % %', tbl, d;
    END IF;
    chunk_no := lo / ts.chunk_us;
    WHILE chunk_no * ts.chunk_us < hi LOOP
        pname := format('%s_p%s', tbl, chunk_no);
        IF to_regclass(pname) IS NOT NULL THEN
            EXECUTE format('LOCK TABLE %I IN ACCESS EXCLUSIVE MODE', pname);
            parts := parts || pname;
        END IF;
        chunk_no := chunk_no + 1;
    END LOOP;
    EXECUTE format('LOCK TABLE %I IN SHARE MODE', tbl || '_default');
    fp := kalshi_day_fingerprint(tbl, lo, hi);
    IF ledger.dropped_at IS NOT NULL THEN
        -- dropped before: partitions made again later (e.g. a wider kalshi_ensure_partitions window) go again while
        -- empty; rows that arrived after the drop are kept (the ledger is left as it is)
        IF fp.rows <> 0 THEN
            RETURN -1;
        END IF;
        FOREACH pname IN ARRAY parts LOOP
            EXECUTE format('DROP TABLE %I', pname);
        END LOOP;
        RETURN COALESCE(array_length(parts, 1), 0);
    END IF;
    IF fp.rows <> ledger.rows OR fp.fingerprint <> ledger.fingerprint THEN
        UPDATE cold_exports SET verified_at = NULL WHERE table_name = tbl AND day = d;
        RETURN -1;
    END IF;
    FOREACH pname IN ARRAY parts LOOP
        EXECUTE format('DROP TABLE %I', pname);
    END LOOP;
    EXECUTE format('DELETE FROM %I WHERE %I >= $1 AND %I < $2', tbl || '_default', ts.time_column, ts.time_column)
        USING lo, hi;
    UPDATE cold_exports SET dropped_at = now_us WHERE table_name = tbl AND day = d;
    RAISE LOG 'kalshi_drop_exported_day: % % dropped by % (% partitions, % rows verified in the cold tier)',
        tbl, d, session_user, array_length(parts, 1), ledger.rows;
    RETURN COALESCE(array_length(parts, 1), 0);
END
$$;
REVOKE EXECUTE ON FUNCTION kalshi_drop_exported_day(text, date, bigint) FROM PUBLIC;
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'deduplicator') THEN
        GRANT EXECUTE ON FUNCTION kalshi_drop_exported_day(text, date, bigint) TO deduplicator;
    END IF;
END
$$;
