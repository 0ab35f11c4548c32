-- kalshi_ensure_partitions is SECURITY DEFINER (it creates partitions as the schema owner), so who may call it and
-- how far ahead it may reach are bounded: EXECUTE is revoked from PUBLIC (kalshictl grants it to the writing role of
-- each database, see kalshictl/db/roles.py), ahead_us must lie in [0, 7 days], a registered table with chunks under
-- a minute is skipped and one call creates at most 1000 partitions. Only the owner may write kalshi_timeseries
-- (roles.py revokes writes on it from the service roles), since this function trusts its rows.
CREATE OR REPLACE FUNCTION kalshi_ensure_partitions(ahead_us bigint DEFAULT 172800000000)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    r        record;
    now_us   bigint := (extract(epoch FROM clock_timestamp()) * 1000000)::bigint;
    lo       bigint;
    chunk_no bigint;
    pname    text;
    created  integer := 0;
BEGIN
    IF ahead_us IS NULL OR ahead_us < 0 OR ahead_us > 604800000000 THEN
        RAISE EXCEPTION 'kalshi_ensure_partitions: ahead_us must be between 0 and 604800000000 (7 days), got %',
            ahead_us USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM set_config('lock_timeout', '2s', true);
    FOR r IN SELECT * FROM kalshi_timeseries WHERE flavor = 'partitioned' ORDER BY table_name LOOP
        IF r.chunk_us < 60000000 THEN  -- a registry row asking for sub-minute chunks would create tables without end
            RAISE WARNING 'kalshi_ensure_partitions: % skipped: chunk_us % is below one minute', r.table_name, r.chunk_us;
            CONTINUE;
        END IF;
        chunk_no := now_us / r.chunk_us - 1;
        WHILE chunk_no * r.chunk_us <= now_us + ahead_us AND created < 1000 LOOP
            lo := chunk_no * r.chunk_us;
            pname := format('%s_p%s', r.table_name, chunk_no);
            IF to_regclass(pname) IS NULL THEN
                BEGIN
                    EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%s) TO (%s)',
                                   pname, r.table_name, lo, lo + r.chunk_us);
                    created := created + 1;
                EXCEPTION WHEN others THEN
                    -- e.g. rows for that range already sit in the default partition, or a lock timeout
                    RAISE NOTICE 'kalshi_ensure_partitions: % not created: %', pname, SQLERRM;
                END;
            END IF;
            chunk_no := chunk_no + 1;
        END LOOP;
    END LOOP;
    RETURN created;
END
$$;

REVOKE EXECUTE ON FUNCTION kalshi_ensure_partitions(bigint) FROM PUBLIC;
