-- Gatherer retention (docs/retention.md): old partitions leave the gatherer only once the deduplicator has merged
-- every row in them.
--
-- The merge ledger: per event table, the deduplicator's sync cursor for THIS database (an xid8 watermark: every row
-- with txid below it has been read and merged into production, see migrations/README.md "Sync watermark"). The
-- deduplicator writes it through kalshi_record_merged() after each merge has committed in production, so the ledger
-- never runs ahead of production's sync_cursors. No service role writes these tables directly.
CREATE TABLE IF NOT EXISTS kalshi_merge_ledger (
    table_name   text        PRIMARY KEY,
    instance_id  uuid        NOT NULL,     -- gatherer_meta.instance_id the watermark belongs to
    merged_below xid8        NOT NULL,     -- every row with txid < merged_below is merged into production
    recorded_by  text        NOT NULL,     -- the role that recorded it (session_user)
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- The audit log: one row per partition dropped (or held back when a run was asked to report holds).
CREATE TABLE IF NOT EXISTS kalshi_retention_log (
    id           bigserial   PRIMARY KEY,
    logged_at    timestamptz NOT NULL DEFAULT now(),
    table_name   text        NOT NULL,
    partition    text        NOT NULL,
    range_from   bigint      NOT NULL,     -- µs, inclusive
    range_to     bigint      NOT NULL,     -- µs, exclusive
    cutoff_us    bigint      NOT NULL,     -- the run's bound: only ranges ending at or before it were candidates
    merged_below xid8,                     -- the ledger's watermark the partition was checked against
    approx_rows  bigint,                   -- pg_class.reltuples at the drop
    bytes        bigint,                   -- pg_total_relation_size at the drop (table + indexes + TOAST)
    action       text        NOT NULL CHECK (action IN ('dropped')),
    called_by    text        NOT NULL      -- session_user of the caller
);

-- Record the deduplicator's watermark for one table of this database. Returns false (and records nothing) for a
-- table that is not a registered time-series table. Refuses a watermark for another database instance or one
-- beyond what any snapshot can have read (pg_snapshot_xmin), so a caller cannot claim rows nobody has seen yet.
CREATE OR REPLACE FUNCTION kalshi_record_merged(p_table text, p_instance uuid, p_merged_below xid8)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    mine uuid;
BEGIN
    IF p_table IS NULL OR p_instance IS NULL OR p_merged_below IS NULL THEN
        RAISE EXCEPTION 'kalshi_record_merged: arguments must not be NULL' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT instance_id INTO mine FROM gatherer_meta;
    IF mine IS DISTINCT FROM p_instance THEN
        RAISE EXCEPTION 'kalshi_record_merged: instance % is not this database (%)', p_instance, mine
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_merged_below > pg_snapshot_xmin(pg_current_snapshot()) THEN
        RAISE EXCEPTION 'kalshi_record_merged: watermark % is beyond the oldest running transaction %',
            p_merged_below, pg_snapshot_xmin(pg_current_snapshot()) USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM kalshi_timeseries WHERE table_name = p_table) THEN
        RETURN false;
    END IF;
    -- the deduplicator's cursor is the truth, also when it moved back (a production restore re-merges from there)
    INSERT INTO kalshi_merge_ledger (table_name, instance_id, merged_below, recorded_by, updated_at)
    VALUES (p_table, p_instance, p_merged_below, session_user, now())
    ON CONFLICT (table_name) DO UPDATE
        SET instance_id = EXCLUDED.instance_id, merged_below = EXCLUDED.merged_below,
            recorded_by = EXCLUDED.recorded_by, updated_at = EXCLUDED.updated_at;
    RETURN true;
END
$$;
REVOKE EXECUTE ON FUNCTION kalshi_record_merged(text, uuid, xid8) FROM PUBLIC;

-- Every partition (native) or chunk (TimescaleDB) of the registered time-series tables with its range in µs (the
-- DEFAULT partition has none and is never listed). Internal: only the SECURITY DEFINER functions below call it.
CREATE OR REPLACE FUNCTION kalshi_time_partitions()
RETURNS TABLE (table_name text, partition_schema text, partition_name text, rel oid, range_from bigint,
               range_to bigint)
LANGUAGE plpgsql
STABLE
SET search_path = public, pg_temp
AS $$
DECLARE
    r      record;
    p      record;
    bounds text[];
BEGIN
    FOR r IN SELECT t.table_name AS tname, t.flavor FROM kalshi_timeseries t ORDER BY t.table_name LOOP
        IF r.flavor = 'partitioned' THEN
            FOR p IN
                SELECT n.nspname AS sch, c.relname AS relname, c.oid AS oid,
                       pg_get_expr(c.relpartbound, c.oid) AS bound
                  FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE i.inhparent = format('%I', r.tname)::regclass
            LOOP
                bounds := regexp_match(p.bound, 'FROM \(''?(-?\d+)''?\) TO \(''?(-?\d+)''?\)');
                CONTINUE WHEN bounds IS NULL;  -- the DEFAULT partition
                table_name := r.tname; partition_schema := p.sch; partition_name := p.relname; rel := p.oid;
                range_from := bounds[1]::bigint; range_to := bounds[2]::bigint;
                RETURN NEXT;
            END LOOP;
        ELSIF to_regclass('timescaledb_information.chunks') IS NOT NULL THEN
            FOR p IN EXECUTE
                'SELECT chunk_schema::text AS sch, chunk_name::text AS relname, range_start_integer AS lo,'
                ' range_end_integer AS hi FROM timescaledb_information.chunks'
                ' WHERE hypertable_schema = ''public'' AND hypertable_name = $1'
                USING r.tname
            LOOP
                table_name := r.tname; partition_schema := p.sch; partition_name := p.relname;
                rel := format('%I.%I', p.sch, p.relname)::regclass; range_from := p.lo; range_to := p.hi;
                RETURN NEXT;
            END LOOP;
        END IF;
    END LOOP;
END
$$;
REVOKE EXECUTE ON FUNCTION kalshi_time_partitions() FROM PUBLIC;

-- The retention candidates: every partition or chunk whose range ends at or before cutoff_us, with what retention
-- would do to it:
--   'drop'               every row is merged (no txid at or above the ledger's watermark)
--   'held_unmerged'      some row is not merged yet: kept whatever its age
--   'held_no_ledger'     the deduplicator has recorded no watermark for this table on this instance: kept
-- Read-only; kalshi_drop_merged_partition() checks again under a lock before it drops.
CREATE OR REPLACE FUNCTION kalshi_retention_candidates(cutoff_us bigint)
RETURNS TABLE (table_name text, partition_name text, range_from bigint, range_to bigint, merged_below xid8,
               approx_rows bigint, bytes bigint, verdict text)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    p        record;
    unmerged boolean;
BEGIN
    IF cutoff_us IS NULL THEN
        RAISE EXCEPTION 'kalshi_retention_candidates: cutoff_us must not be NULL'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR p IN
        SELECT t.*, l.merged_below AS mark
          FROM kalshi_time_partitions() t
          LEFT JOIN (kalshi_merge_ledger l JOIN gatherer_meta m ON m.instance_id = l.instance_id)
                 ON l.table_name = t.table_name
         WHERE t.range_to <= cutoff_us
         ORDER BY t.table_name, t.range_from
    LOOP
        table_name := p.table_name; partition_name := p.partition_name; range_from := p.range_from;
        range_to := p.range_to; merged_below := p.mark;
        approx_rows := greatest(0, (SELECT c.reltuples FROM pg_class c WHERE c.oid = p.rel))::bigint;
        bytes := pg_total_relation_size(p.rel);
        IF p.mark IS NULL THEN
            verdict := 'held_no_ledger';
        ELSE
            EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I.%I WHERE txid >= $1)', p.partition_schema,
                           p.partition_name) INTO unmerged USING p.mark;
            verdict := CASE WHEN unmerged THEN 'held_unmerged' ELSE 'drop' END;
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;
REVOKE EXECUTE ON FUNCTION kalshi_retention_candidates(bigint) FROM PUBLIC;

-- Drop ONE partition (or chunk) of a registered time-series table, only if its range ends at or before cutoff_us
-- and every row in it is merged: under ACCESS EXCLUSIVE locks on the table and the partition (lock_timeout 2 s, so
-- writers wait at most that long) it checks that no row has txid at or above the ledger's watermark, drops it, and
-- logs the drop in kalshi_retention_log. Returns 'dropped', or why not ('held_unmerged', 'held_no_ledger',
-- 'not_a_candidate', 'locked'). This is the only way a service role can remove rows from this database.
CREATE OR REPLACE FUNCTION kalshi_drop_merged_partition(p_table text, p_partition text, cutoff_us bigint)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    c        record;
    mark     xid8;
    unmerged boolean;
    nrows    bigint;
    nbytes   bigint;
BEGIN
    IF cutoff_us IS NULL THEN
        RAISE EXCEPTION 'kalshi_drop_merged_partition: cutoff_us must not be NULL'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO c FROM kalshi_time_partitions() t
     WHERE t.table_name = p_table AND t.partition_name = p_partition AND t.range_to <= cutoff_us;
    IF NOT FOUND THEN
        RETURN 'not_a_candidate';
    END IF;
    SELECT l.merged_below INTO mark FROM kalshi_merge_ledger l JOIN gatherer_meta m ON m.instance_id = l.instance_id
     WHERE l.table_name = c.table_name;
    IF mark IS NULL THEN
        RETURN 'held_no_ledger';
    END IF;
    PERFORM set_config('lock_timeout', '2s', true);
    BEGIN
        -- parent first, as an INSERT takes them (DROP of a partition locks its parent anyway): no deadlock with a
        -- writer routing a late row into this partition
        IF c.partition_schema = 'public' THEN
            EXECUTE format('LOCK TABLE %I IN ACCESS EXCLUSIVE MODE', c.table_name);
        END IF;
        EXECUTE format('LOCK TABLE %I.%I IN ACCESS EXCLUSIVE MODE', c.partition_schema, c.partition_name);
    EXCEPTION WHEN lock_not_available THEN
        RETURN 'locked';
    END;
    -- under the lock nothing writes into it, and every transaction below the watermark has ended
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I.%I WHERE txid >= $1)', c.partition_schema, c.partition_name)
        INTO unmerged USING mark;
    IF unmerged THEN
        RETURN 'held_unmerged';
    END IF;
    nrows := greatest(0, (SELECT pc.reltuples FROM pg_class pc WHERE pc.oid = c.rel))::bigint;
    nbytes := pg_total_relation_size(c.rel);
    BEGIN
        IF c.partition_schema = 'public' THEN
            EXECUTE format('DROP TABLE %I.%I', c.partition_schema, c.partition_name);
        ELSE  -- a TimescaleDB chunk: drop_chunks for exactly its range
            EXECUTE 'SELECT drop_chunks(format(''%I'', $1)::regclass, older_than => $3, newer_than => $2)'
                USING c.table_name, c.range_from, c.range_to;
        END IF;
    EXCEPTION WHEN lock_not_available THEN
        RETURN 'locked';
    END;
    INSERT INTO kalshi_retention_log (table_name, partition, range_from, range_to, cutoff_us, merged_below,
                                      approx_rows, bytes, action, called_by)
    VALUES (c.table_name, c.partition_name, c.range_from, c.range_to, cutoff_us, mark, nrows, nbytes, 'dropped',
            session_user);
    RETURN 'dropped';
END
$$;
REVOKE EXECUTE ON FUNCTION kalshi_drop_merged_partition(text, text, bigint) FROM PUBLIC;

-- No service role writes the ledger or the log directly (kalshictl/db/roles.py: OWNER_WRITES_ONLY re-applies this
-- after every migration and init-db); revoke what default privileges gave roles that exist already.
DO $$
DECLARE
    r text;
BEGIN
    FOR r IN SELECT rolname FROM pg_roles WHERE rolname IN ('gatherer', 'dedup_reader') LOOP
        EXECUTE format('REVOKE INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER'
                       ' ON kalshi_merge_ledger, kalshi_retention_log FROM %I', r);
    END LOOP;
END
$$;
