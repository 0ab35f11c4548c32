"""#15 items 2, 6 and 8 on a real cluster: the partition function is callable only by the writing roles and bounded,
the gatherer role can only append (and do its own bookkeeping), and preflight's grant check sees every extra
privilege."""

from __future__ import annotations

import psycopg
import pytest

from kalshictl.db import migrate as mig
from kalshictl.db.roles import ROLES, check_grants, ensure_role

OWNER_ROLE = "kalshi_owner"

PW = {r.name: f"{r.name}-pw-9" for r in ROLES}
DBS = {"gatherer": "kalshi_ts", "production": "kalshi_prod"}
DAY_US = 86_400_000_000


@pytest.fixture(scope="module")
def cluster():
    """init-db then migrate (the deployment order) for both targets, in one fresh cluster."""
    from kalshictl.db.embedded import PostgresCluster

    c = PostgresCluster()
    c.start()
    for target, db in DBS.items():
        c.create_database(db)
        with psycopg.connect(c.dsn(db), autocommit=True) as conn:
            for spec in ROLES:
                if spec.target == target:
                    ensure_role(conn, spec, PW[spec.name], db)
            mig.migrate(conn, target, flavor="partitioned")  # type: ignore[arg-type]
    yield c
    c.destroy()


def as_role(cluster, target: str, role: str) -> psycopg.Connection:
    return psycopg.connect(cluster.dsn(DBS[target], role), password=PW[role], autocommit=True)


def admin(cluster, target: str) -> psycopg.Connection:
    return psycopg.connect(cluster.dsn(DBS[target]), autocommit=True)


def test_only_writers_create_partitions_and_only_so_far_ahead(cluster):
    for target, role in (("production", "exporter"), ("gatherer", "dedup_reader")):
        with as_role(cluster, target, role) as c, pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("SELECT kalshi_ensure_partitions(%s)", (7 * DAY_US,))
    for target, role in (("production", "deduplicator"), ("gatherer", "gatherer")):
        with as_role(cluster, target, role) as c:
            assert c.execute("SELECT kalshi_ensure_partitions()").fetchone()[0] >= 0
            with pytest.raises(psycopg.errors.InvalidParameterValue):
                c.execute("SELECT kalshi_ensure_partitions(%s)", (30 * DAY_US,))
            with pytest.raises(psycopg.errors.InvalidParameterValue):
                c.execute("SELECT kalshi_ensure_partitions(-1)")
    with admin(cluster, "production") as c:
        assert not c.execute(
            "SELECT has_function_privilege('public', 'kalshi_ensure_partitions(bigint)', 'EXECUTE')"
        ).fetchone()[0]
    # the function trusts kalshi_timeseries: no service role may register a table or a tiny chunk there
    for target, role in (("production", "deduplicator"), ("gatherer", "gatherer")):
        with as_role(cluster, target, role) as c:
            for stmt in (
                "INSERT INTO kalshi_timeseries VALUES ('trades', 'exchange_ts', 1, 'partitioned')",
                "UPDATE kalshi_timeseries SET chunk_us = 1",
                "DELETE FROM kalshi_schema_version",
            ):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    c.execute(stmt)
    with admin(cluster, "gatherer") as c:  # even the owner's mistake cannot make it loop without end
        c.execute("UPDATE kalshi_timeseries SET chunk_us = 1000 WHERE table_name = 'tickers'")
        try:
            with as_role(cluster, "gatherer", "gatherer") as g:
                assert g.execute("SELECT kalshi_ensure_partitions()").fetchone()[0] == 0
        finally:
            c.execute("UPDATE kalshi_timeseries SET chunk_us = 3600000000 WHERE table_name = 'tickers'")


def test_gatherer_appends_and_keeps_its_books_but_cannot_rewrite_history(cluster):
    with as_role(cluster, "gatherer", "gatherer") as c:
        c.execute("INSERT INTO tickers (exchange_ts, received_at, ticker) VALUES (1, 1, 'X')")
        assert c.execute("SELECT count(*) FROM tickers").fetchone()[0] >= 1
        c.execute("UPDATE gatherer_meta SET last_alive_us = 5")  # coverage heartbeat
        gap = c.execute(
            "INSERT INTO sequence_gaps (gatherer, instance_id, window_id, channel, reason, from_ts, detected_at)"
            " VALUES ('g', 'i', 1, '*', 'restart', 1, 1)"
            " RETURNING gap_id"
        ).fetchone()[0]
        c.execute("UPDATE sequence_gaps SET to_ts = 2 WHERE gap_id = %s", (gap,))  # closing a gap window
        partition = c.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'tickers'::regclass LIMIT 1"
        ).fetchone()[0]
        for stmt in (
            "DELETE FROM tickers",
            "UPDATE tickers SET ticker = 'Y'",
            "TRUNCATE tickers",
            f'TRUNCATE "{partition}"',
            "DELETE FROM sequence_gaps",
            "TRUNCATE sequence_gaps",
            "DELETE FROM gatherer_meta",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute(stmt)


def test_check_grants_reports_every_extra_privilege_and_init_db_tightens(cluster):
    for target, db in DBS.items():
        with admin(cluster, target) as c:
            rows = check_grants(c, db, target)  # type: ignore[arg-type]
            assert all(r["ok"] for r in rows), rows
    with admin(cluster, "production") as c:
        c.execute("GRANT DELETE, UPDATE, TRUNCATE ON trades TO exporter")
        c.execute("GRANT EXECUTE ON FUNCTION kalshi_ensure_partitions(bigint) TO exporter")
        problem = {r["role"]: r["problem"] for r in check_grants(c, DBS["production"], "production")}
        for text in ("has UPDATE on trades", "has DELETE on trades", "has TRUNCATE on trades", "can EXECUTE"):
            assert text in problem["exporter"], problem
        assert problem["deduplicator"] is None
    with admin(cluster, "gatherer") as c:
        c.execute("GRANT ALL ON ALL TABLES IN SCHEMA public TO gatherer")  # what the old init-db granted
        bad = {r["role"]: r for r in check_grants(c, DBS["gatherer"], "gatherer")}
        assert not bad["gatherer"]["ok"] and "has DELETE on" in bad["gatherer"]["problem"]
        # re-running init-db's role step revokes what is not needed
        ensure_role(c, next(r for r in ROLES if r.name == "gatherer"), None, DBS["gatherer"])
        assert all(r["ok"] for r in check_grants(c, DBS["gatherer"], "gatherer"))
    with admin(cluster, "production") as c:
        ensure_role(c, next(r for r in ROLES if r.name == "exporter"), None, DBS["production"])
        assert all(r["ok"] for r in check_grants(c, DBS["production"], "production"))


def test_roles_created_after_migrate_get_the_same_grants(pg_cluster, fresh_db):
    """The order the test fixtures use (migrate, then roles) ends in the same privileges."""
    with psycopg.connect(pg_cluster.dsn(fresh_db), autocommit=True) as conn:
        mig.migrate(conn, "gatherer", flavor="partitioned")
        # roles are cluster-wide: only check what this database grants, without touching passwords
        for spec in ROLES:
            if spec.target == "gatherer":
                ensure_role(conn, spec, None, fresh_db)
        assert all(r["ok"] for r in check_grants(conn, fresh_db, "gatherer"))


def _migrations_plus(tmp_path, target: str, name: str, sql: str):
    """A copy of migrations/ with one more file for ``target`` (a later release's migration)."""
    import shutil

    root = tmp_path / "migrations"
    shutil.copytree(mig.migrations_root(), root)
    (root / target / name).write_text(sql)
    return root


def test_deduplicator_cannot_make_itself_superuser_with_a_trigger(cluster, tmp_path):
    """The escalation: a pg_temp trigger on ``series`` that fires on the owner's next insert (a migration)."""
    pg_cluster, fresh_db = cluster, "kalshi_prod_escalation"
    cluster.create_database(fresh_db)
    with psycopg.connect(pg_cluster.dsn(fresh_db), autocommit=True) as conn:
        mig.migrate(conn, "production", flavor="partitioned")
        ensure_role(conn, next(r for r in ROLES if r.name == "deduplicator"), PW["deduplicator"], fresh_db)
    attack = (
        "CREATE FUNCTION pg_temp.esc() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN EXECUTE 'ALTER ROLE deduplicator SUPERUSER'; RETURN NEW; END $$"
    )
    trigger = "CREATE TRIGGER esc BEFORE INSERT ON series FOR EACH ROW EXECUTE FUNCTION pg_temp.esc()"
    later = _migrations_plus(
        tmp_path, "production", "990_touch_series.sql", "INSERT INTO series (ticker, data) VALUES ('S', '{}');"
    )
    dedup = psycopg.connect(pg_cluster.dsn(fresh_db, "deduplicator"), password=PW["deduplicator"], autocommit=True)
    try:
        dedup.execute(attack)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            dedup.execute(trigger)
        # even with TRIGGER granted by mistake, the migration runs as the owner role, which cannot alter roles
        with psycopg.connect(pg_cluster.dsn(fresh_db), autocommit=True) as conn:
            conn.execute("GRANT TRIGGER ON series TO deduplicator")
        dedup.execute(trigger)
        with psycopg.connect(pg_cluster.dsn(fresh_db), autocommit=True) as conn:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                mig.migrate(conn, "production", root=later)
            assert not conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = 'deduplicator'").fetchone()[0]
    finally:
        dedup.close()
        with psycopg.connect(pg_cluster.dsn(), autocommit=True) as conn:
            conn.execute("ALTER ROLE deduplicator NOSUPERUSER")


def test_migrations_run_as_the_owner_role_which_is_not_a_superuser(cluster, tmp_path):
    pg_cluster, fresh_db = cluster, "kalshi_prod_whoami"
    cluster.create_database(fresh_db)
    later = _migrations_plus(
        tmp_path,
        "production",
        "990_whoami.sql",
        "CREATE TABLE whoami AS SELECT current_user::text AS who,"
        " (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS super;",
    )
    with psycopg.connect(pg_cluster.dsn(fresh_db), autocommit=True) as conn:
        mig.migrate(conn, "production", flavor="partitioned", root=later)
        assert conn.execute("SELECT who, super FROM whoami").fetchone() == (OWNER_ROLE, False)
        owners = conn.execute(
            "SELECT DISTINCT pg_get_userbyid(c.relowner) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'S', 'v', 'm')"
        ).fetchall()
        assert owners == [(OWNER_ROLE,)]
        attrs = conn.execute(
            "SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls FROM pg_roles"
            " WHERE rolname = %s",
            (OWNER_ROLE,),
        ).fetchone()
        assert attrs == (False, False, False, False, False)
        assert conn.execute("SELECT current_user").fetchone()[0] == "postgres"  # the session's role is restored


def test_deduplicator_has_exactly_what_its_code_uses(cluster):
    with admin(cluster, "production") as c:
        tables = [r[0] for r in c.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()]
        for table in tables:
            granted = {
                p
                for p in ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
                if c.execute("SELECT has_table_privilege('deduplicator', %s, %s)", (table, p)).fetchone()[0]
            }
            if table.startswith("kalshi_"):
                assert granted == {"SELECT"}, table
            elif table.startswith("lifecycle_copies"):
                assert granted == {"SELECT", "INSERT", "UPDATE", "DELETE"}, table
            elif c.execute("SELECT relispartition FROM pg_class WHERE oid = %s::regclass", (table,)).fetchone()[0]:
                assert granted == set(), table  # reached through the parent only
            else:
                assert granted == {"SELECT", "INSERT", "UPDATE"}, table


def test_migrate_brings_an_older_database_to_the_owner_and_the_policy(cluster):
    """A database set up by an older version (tables owned by the superuser, the deduplicator with ALL) is brought
    to the owner role and the exact policy by `migrate`, even with no migration pending."""
    from kalshictl.db.roles import check_owner

    db = "kalshi_prod_upgrade"
    cluster.create_database(db)
    with psycopg.connect(cluster.dsn(db), autocommit=True) as conn:
        mig.migrate(conn, "production", flavor="partitioned")
        ensure_role(conn, next(r for r in ROLES if r.name == "deduplicator"), None, db)
        conn.execute("ALTER TABLE series OWNER TO postgres")
        conn.execute("ALTER FUNCTION kalshi_ensure_partitions(bigint) OWNER TO postgres")
        conn.execute("GRANT ALL ON ALL TABLES IN SCHEMA public TO deduplicator")
        assert not check_owner(conn)["ok"]
        assert "has TRIGGER on" in check_grants(conn, db, "production")[0]["problem"]
        assert not mig.migrate(conn, "production").pending
        assert check_owner(conn) == {"ok": True, "problem": None}
        rows = {r["role"]: r for r in check_grants(conn, db, "production")}
        assert rows["deduplicator"]["ok"], rows
