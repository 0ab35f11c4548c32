"""The service database roles with least privilege (see docs/security.md), and SCRAM password handling.

Passwords are never sent to the server in plaintext: the SCRAM-SHA-256 verifier is computed on the client with
libpq's ``PQencryptPasswordConn`` and ``ALTER ROLE ... PASSWORD '<verifier>'`` carries only the verifier. A verifier
still allows an offline guessing attack, so the statement runs with ``log_statement``/``log_min_duration_statement``/
``log_min_error_statement`` switched off for its transaction when the admin may change them (a superuser; on
PostgreSQL 15+ also a role granted SET on them). Where it may not (e.g. RDS without those grants), keep
``log_statement`` below ``ddl`` on that server during rotation (docs/security.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from kalshictl.db.rows import one_row
from kalshictl.errors import KalshiCtlError

if TYPE_CHECKING:
    import psycopg

Target = Literal["gatherer", "production"]


@dataclass(frozen=True)
class RoleSpec:
    """One service role (docs/security.md, "Database roles: exact privileges")."""

    name: str
    target: Target
    read_only: bool
    used_by: str


ROLES: tuple[RoleSpec, ...] = (
    RoleSpec("gatherer", "gatherer", False, "Gatherer"),
    RoleSpec("dedup_reader", "gatherer", True, "Deduplicator"),
    RoleSpec("deduplicator", "production", False, "Deduplicator"),
    RoleSpec("exporter", "production", True, "S3 Exporter"),
)


def roles_for(target: Target) -> list[RoleSpec]:
    """The roles that live in a target's database."""
    return [r for r in ROLES if r.target == target]


# Every table privilege PostgreSQL has; preflight checks each one, both ways (missing and extra).
TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
# Privileges that may also be granted on single columns (has_any_column_privilege sees those).
COLUMN_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "REFERENCES")

# The privilege policy: the one place that says what each role may do (docs/security.md, "Privileges"). A table a
# migration adds gets its role's BASE privileges when ``migrate`` ends (:func:`apply_object_grants`); a table that
# needs more for one role is listed in EXTRA_PRIVILEGES. Never write GRANT in a migration.
# What each role may do on every table of its database ...
BASE_PRIVILEGES: dict[str, frozenset[str]] = {
    "gatherer": frozenset({"SELECT", "INSERT"}),
    "dedup_reader": frozenset({"SELECT"}),
    # upserts (INSERT .. ON CONFLICT DO UPDATE), sync cursors, closing gap windows (kalshictl/dedup/)
    "deduplicator": frozenset({"SELECT", "INSERT", "UPDATE"}),
    "exporter": frozenset({"SELECT"}),
}
# ... plus what its own bookkeeping needs on named tables.
EXTRA_PRIVILEGES: dict[str, dict[str, frozenset[str]]] = {
    # the coverage heartbeat (gatherer_meta) and the gap windows it closes
    "gatherer": {"gatherer_meta": frozenset({"UPDATE"}), "sequence_gaps": frozenset({"UPDATE"})},
    # retention of merged lifecycle copies (kalshictl/dedup/lifecycle_merge.py)
    "deduplicator": {"lifecycle_copies": frozenset({"DELETE"})},
}
# A schema of its own where a role may create tables (docs/security.md): the exporter keeps the Iceberg SQL catalog's
# tables there (it stays read-only on every table of public).
OWN_SCHEMAS: dict[str, str] = {"exporter": "iceberg"}
# Migration bookkeeping: the partition function trusts kalshi_timeseries, so only the owner writes these.
# The retention functions trust the merge ledger and keep the audit log (migrations/gatherer/019_retention.sql).
OWNER_WRITES_ONLY = ("kalshi_schema_version", "kalshi_timeseries", "kalshi_merge_ledger", "kalshi_retention_log")
# Sequence privileges (bigserial ids): the writers only draw values.
SEQUENCE_PRIVILEGES: dict[str, str] = {"gatherer": "USAGE", "deduplicator": "USAGE"}
# The SECURITY DEFINER partition maintenance function: only the writing role of each database may call it.
ENSURE_PARTITIONS_FN = "kalshi_ensure_partitions(bigint)"
EXECUTE_ROLES = frozenset({"gatherer", "deduplicator"})
# Every SECURITY DEFINER function and the roles that may call it (EXECUTE is revoked from PUBLIC where it is made).
# Retention (docs/retention.md): the deduplicator records its merge watermark in each gatherer database, and the
# gatherer drops only partitions the ledger shows merged, through these narrow, audited functions.
FUNCTION_EXECUTE: dict[str, frozenset[str]] = {
    ENSURE_PARTITIONS_FN: EXECUTE_ROLES,
    "kalshi_record_merged(text,uuid,xid8)": frozenset({"dedup_reader"}),
    "kalshi_retention_candidates(bigint)": frozenset({"gatherer"}),
    "kalshi_drop_merged_partition(text,text,bigint)": frozenset({"gatherer"}),
    # production drops a day only when the cold-tier ledger holds a verified export (docs/deduplicator.md)
    "kalshi_drop_exported_day(text,date,bigint)": frozenset({"deduplicator"}),
}
# The role that owns every object of the schema and runs the migrations: no superuser, no other attribute, NOLOGIN
# (``migrate`` switches to it with SET ROLE). A service role's code can never run with more than its privileges.
OWNER_ROLE = "kalshi_owner"
# Role attributes no service role (nor the owner) may hold.
ROLE_ATTRIBUTES = {
    "rolsuper": "SUPERUSER",
    "rolcreaterole": "CREATEROLE",
    "rolcreatedb": "CREATEDB",
    "rolreplication": "REPLICATION",
    "rolbypassrls": "BYPASSRLS",
}


def expected_privileges(role: str, table: str) -> frozenset[str]:
    """The table privileges a role must have on a table (and, by omission, must not have)."""
    if table in OWNER_WRITES_ONLY:
        return BASE_PRIVILEGES[role] & {"SELECT"}
    return BASE_PRIVILEGES[role] | EXTRA_PRIVILEGES.get(role, {}).get(table, frozenset())


def _ident(name: str) -> str:
    from psycopg import sql

    return sql.Identifier(name).as_string(None)


def _privs(privileges: frozenset[str]) -> str:
    return ", ".join(sorted(privileges, key=TABLE_PRIVILEGES.index))


def grant_statements(role: RoleSpec, dbname: str) -> list[str]:
    """Database-level statements for a role: CONNECT, and no default privileges (left by older versions).

    Table, sequence and function privileges come from :func:`object_grant_statements`, which ``migrate`` runs again
    after creating objects, so a new table gets its grants from the policy above and nowhere else.
    """
    db, r = _ident(dbname), _ident(role.name)
    out = [
        f"GRANT CONNECT ON DATABASE {db} TO {r}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON TABLES FROM {r}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON SEQUENCES FROM {r}",
        f"REVOKE CREATE ON SCHEMA public FROM {r}",
    ]
    if own := OWN_SCHEMAS.get(role.name):
        schema = _ident(own)
        out += [f"CREATE SCHEMA IF NOT EXISTS {schema}", f"GRANT USAGE, CREATE ON SCHEMA {schema} TO {r}"]
    return out


def _public_tables(conn: psycopg.Connection) -> list[tuple[str, bool]]:
    """(name, is a partition) of every table in schema public that no extension owns."""
    return conn.execute(
        "SELECT c.relname, c.relispartition FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT EXISTS (SELECT 1 FROM pg_depend d"
        "  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e') ORDER BY 1"
    ).fetchall()


def _has_acl_entry(conn: psycopg.Connection, table: str, role: str) -> bool:
    return bool(
        one_row(
            conn.execute(
                "SELECT EXISTS (SELECT 1 FROM pg_class c, aclexplode(c.relacl) a JOIN pg_roles r ON r.oid = a.grantee"
                " WHERE c.oid = format('public.%%I', %s::text)::regclass AND r.rolname = %s)"
                " OR EXISTS (SELECT 1 FROM pg_attribute t, aclexplode(t.attacl) a JOIN pg_roles r ON r.oid = a.grantee"
                " WHERE t.attrelid = format('public.%%I', %s::text)::regclass AND r.rolname = %s)",
                (table, role, table, role),
            )
        )[0]
    )


def object_grant_statements(conn: psycopg.Connection, role: RoleSpec) -> list[str]:
    """Statements that give a role exactly :func:`expected_privileges` on every table that exists now.

    Each table's privileges are revoked (table and column level) and granted again from the policy, so an older
    version's ``GRANT ALL`` or a hand-made grant is removed; a partition gets nothing (rows are reached through the
    parent). Also USAGE on sequences and EXECUTE on the partition function. Run them in one transaction.
    """
    r = _ident(role.name)
    out = []
    for table, is_partition in _public_tables(conn):
        t = _ident(table)
        if is_partition:
            if _has_acl_entry(conn, table, role.name):
                out.append(f"REVOKE ALL ON {t} FROM {r}")
            continue
        out.append(f"REVOKE ALL ON {t} FROM {r}")
        wanted = expected_privileges(role.name, table)
        if wanted:
            out.append(f"GRANT {_privs(wanted)} ON {t} TO {r}")
    out.append(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {r}")
    seq = SEQUENCE_PRIVILEGES.get(role.name)
    if seq:
        out.append(f"GRANT {seq} ON ALL SEQUENCES IN SCHEMA public TO {r}")
    for fn, roles in FUNCTION_EXECUTE.items():
        if one_row(conn.execute("SELECT to_regprocedure(%s) IS NOT NULL", (fn,)))[0]:
            verb = "GRANT" if role.name in roles else "REVOKE"
            prep = "TO" if verb == "GRANT" else "FROM"
            out.append(f"{verb} EXECUTE ON FUNCTION {fn} {prep} {r}")
    return out


def apply_object_grants(conn: psycopg.Connection, target: Target) -> list[str]:
    """After a migration: give the target's existing roles exactly their policy (one transaction); returns them."""
    done = []
    with conn.transaction():
        for spec in roles_for(target):
            if role_exists(conn, spec.name):
                for stmt in object_grant_statements(conn, spec):
                    conn.execute(stmt)
                done.append(spec.name)
    return done


def is_superuser(conn: psycopg.Connection) -> bool:
    """True if the session's current role is a superuser."""
    return bool(one_row(conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"))[0])


def ensure_owner(conn: psycopg.Connection) -> str | None:
    """Create :data:`OWNER_ROLE` if missing and hand it every object of schema public; returns its name.

    Needs a superuser or a role with CREATEROLE (e.g. RDS's master user), which is then made a member so that it
    can ``SET ROLE`` to the owner. Returns None when the session may not create roles and no owner exists: the
    session's own role (not a superuser) then owns what it creates. Objects an extension owns are left alone.
    """
    from psycopg import sql

    me = one_row(conn.execute("SELECT current_user"))[0]
    if me == OWNER_ROLE:
        return OWNER_ROLE
    superuser = is_superuser(conn)
    owner = sql.Identifier(OWNER_ROLE)
    if not role_exists(conn, OWNER_ROLE):
        if not (
            superuser or one_row(conn.execute("SELECT rolcreaterole FROM pg_roles WHERE rolname = current_user"))[0]
        ):
            return None
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(owner))
    if superuser:
        conn.execute(
            sql.SQL("ALTER ROLE {} NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS").format(owner)
        )
    elif not one_row(conn.execute("SELECT pg_has_role(current_user, %s, 'MEMBER')", (OWNER_ROLE,)))[0]:
        conn.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(owner))
    if not one_row(conn.execute("SELECT has_schema_privilege(%s, 'public', 'CREATE')", (OWNER_ROLE,)))[0]:
        conn.execute(sql.SQL("GRANT USAGE, CREATE ON SCHEMA public TO {}").format(owner))
    public_creates = (
        "SELECT EXISTS (SELECT 1 FROM pg_namespace n, aclexplode(n.nspacl) a"
        " WHERE n.nspname = 'public' AND a.grantee = 0 AND a.privilege_type = 'CREATE')"
    )
    if one_row(conn.execute(public_creates))[0]:  # PostgreSQL before 15: everyone could create in public
        conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    for stmt in _ownership_statements(conn):
        conn.execute(stmt)
    return OWNER_ROLE


_ALTER_KIND = {"r": "TABLE", "p": "TABLE", "f": "FOREIGN TABLE", "v": "VIEW", "m": "MATERIALIZED VIEW", "S": "SEQUENCE"}
_PROC_KIND = {"f": "FUNCTION", "p": "PROCEDURE", "a": "AGGREGATE"}


def _ownership_statements(conn: psycopg.Connection) -> list[str]:
    """ALTER .. OWNER TO the owner role for every object of schema public someone else owns (extension members and
    sequences owned by a column, which follow their table, excepted)."""
    from psycopg import sql

    owner = sql.Identifier(OWNER_ROLE).as_string(None)
    not_dependent = (
        "NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = {cls}::regclass AND d.objid = {oid}"
        " AND d.deptype IN ('e', 'a', 'i'))"
    )
    rels = conn.execute(
        "SELECT c.oid::regclass::text, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'f', 'v', 'm', 'S')"
        " AND c.relowner <> %s::regrole AND " + not_dependent.format(cls="'pg_class'", oid="c.oid") + " ORDER BY 1",
        (OWNER_ROLE,),
    ).fetchall()
    procs = conn.execute(
        "SELECT p.oid::regprocedure::text, p.prokind FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE n.nspname = 'public' AND p.proowner <> %s::regrole AND "
        + not_dependent.format(cls="'pg_proc'", oid="p.oid")
        + " ORDER BY 1",
        (OWNER_ROLE,),
    ).fetchall()
    out = [f"ALTER {_ALTER_KIND[kind]} {name} OWNER TO {owner}" for name, kind in rels]
    out += [f"ALTER {_PROC_KIND.get(kind, 'FUNCTION')} {name} OWNER TO {owner}" for name, kind in procs]
    return out


@contextmanager
def acting_as(conn: psycopg.Connection, role: str | None) -> Iterator[None]:
    """Run the block's statements under ``SET ROLE role`` and restore the session's role (None: change nothing).

    SET ROLE is not a boundary against code running in the session: it makes the owner own what is created and
    checks statements as the owner; that no service role can attach code to the owner's objects (no TRIGGER, no
    ownership, no CREATE on schema public) is what stops an escalation.
    """
    from psycopg import sql

    switch = False
    if role and one_row(conn.execute("SELECT current_user"))[0] != role:
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        switch = True
    try:
        yield
    finally:
        if switch:
            conn.execute("RESET ROLE")


def scram_verifier(conn: psycopg.Connection, role: str, password: str) -> str:
    """Compute a SCRAM-SHA-256 verifier on the client (libpq PQencryptPasswordConn)."""
    verifier = conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256")
    return verifier.decode()


def set_password(conn: psycopg.Connection, role: str, password: str) -> None:
    """ALTER ROLE .. PASSWORD with a client-computed SCRAM verifier (never the plaintext)."""
    from psycopg import sql

    verifier = scram_verifier(conn, role, password)
    # A verifier is not the password but allows an offline guessing attack: keep the statement out of the server
    # log (log_statement=ddl/all, log_min_duration_statement, log_min_error_statement) for this transaction only.
    with conn.transaction():
        if _can_silence_logging(conn):
            for setting, value in _QUIET.items():
                conn.execute("SELECT set_config(%s, %s, true)", (setting, value))
        conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(verifier)))


_QUIET = {"log_statement": "none", "log_min_duration_statement": "-1", "log_min_error_statement": "panic"}


def _can_silence_logging(conn: psycopg.Connection) -> bool:
    """True if this session may change the logging settings (superuser, or SET granted on them: PostgreSQL 15+)."""
    if one_row(conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"))[0]:
        return True
    if conn.info.server_version < 150000:
        return False
    sql = "SELECT bool_and(has_parameter_privilege(p, 'SET')) FROM unnest(%s::text[]) p"
    return bool(one_row(conn.execute(sql, (list(_QUIET),)))[0])


def role_exists(conn: psycopg.Connection, role: str) -> bool:
    """True if a role exists in the cluster."""
    return conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is not None


def ensure_database(admin_conn: psycopg.Connection, dbname: str) -> bool:
    """Create the database if missing (admin connection in autocommit); returns True if created."""
    from psycopg import sql

    if admin_conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone():
        return False
    admin_conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    return True


def ensure_role(conn: psycopg.Connection, spec: RoleSpec, password: str | None, dbname: str) -> dict:
    """Create the role if missing (LOGIN, no other attributes), set its password, apply its grants."""
    from psycopg import sql

    created = False
    if not role_exists(conn, spec.name):
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(spec.name)))
        created = True
    conn.execute(
        sql.SQL("ALTER ROLE {} NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS LOGIN").format(
            sql.Identifier(spec.name)
        )
    )
    if password is not None:
        set_password(conn, spec.name, password)
    for (granted,) in conn.execute(
        "SELECT m.roleid::regrole::text FROM pg_auth_members m WHERE m.member = %s::regrole", (spec.name,)
    ).fetchall():  # a service role is a member of nothing (pg_execute_server_program, pg_read_server_files, ...)
        conn.execute(sql.SQL("REVOKE {} FROM {}").format(sql.SQL(granted), sql.Identifier(spec.name)))
    with conn.transaction():
        for stmt in grant_statements(spec, dbname) + object_grant_statements(conn, spec):
            conn.execute(stmt)
    return {"role": spec.name, "created": created, "password_set": password is not None, "read_only": spec.read_only}


def check_cidr(remote_cidr: str) -> str:
    """A validated network for a pg_hba ADDRESS field (``10.0.0.0/8``); ConfigError for anything else."""
    import ipaddress

    from kalshictl.errors import ConfigError

    text = remote_cidr.strip() if isinstance(remote_cidr, str) else ""
    try:
        if not text or text != remote_cidr or "/" not in text:
            raise ValueError
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        raise ConfigError(f"--remote-cidr: expected a network like 10.0.0.0/8, got {remote_cidr!r}") from None


def hba_lines(target: Target, dbname: str, remote_cidr: str = "10.0.0.0/8") -> list[str]:
    """The pg_hba.conf lines for a target (the CIDR and database name validated first)."""
    import re

    from kalshictl.errors import ConfigError

    remote_cidr = check_cidr(remote_cidr)
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_$-]{0,62}", dbname):
        raise ConfigError(f"database name {dbname!r} cannot be written into pg_hba.conf as is")
    if target == "gatherer":
        return [
            "# Local connections (gatherer service)",
            f"local   {dbname:<15} gatherer                                scram-sha-256",
            "# Remote connections (deduplicator), TLS only",
            f"hostssl {dbname:<15} dedup_reader    {remote_cidr:<23} scram-sha-256",
            "# Reject all other connections",
            "host    all             all             0.0.0.0/0               reject",
        ]
    return [
        "# Production (RDS manages pg_hba; for a self-hosted production database:)",
        f"hostssl {dbname:<15} deduplicator    {remote_cidr:<23} scram-sha-256",
        f"hostssl {dbname:<15} exporter        {remote_cidr:<23} scram-sha-256",
        "host    all             all             0.0.0.0/0               reject",
    ]


def check_grants(conn: psycopg.Connection, dbname: str, target: Target) -> list[dict]:
    """Compare each role with the policy (for preflight). One row per role.

    Checked both ways (a privilege missing or one too many): every table privilege, table and column level (a
    column-level UPDATE counts), on tables and on partitions (which get none: rows are reached through the parent);
    EXECUTE on the partition function; role attributes (SUPERUSER, CREATEROLE, CREATEDB, REPLICATION, BYPASSRLS);
    membership in any role (``pg_execute_server_program``, ...); CREATE on any schema.
    """
    rows = []
    tables = _public_tables(conn)
    names = [t for t, _ in tables]
    partitions = {t for t, is_partition in tables if is_partition}
    functions = [
        (fn, roles)
        for fn, roles in FUNCTION_EXECUTE.items()
        if one_row(conn.execute("SELECT to_regprocedure(%s) IS NOT NULL", (fn,)))[0]
    ]
    for spec in roles_for(target):
        if not role_exists(conn, spec.name):
            rows.append({"role": spec.name, "ok": False, "problem": "role missing"})
            continue
        problems = _role_problems(conn, spec.name)
        if not one_row(conn.execute("SELECT has_database_privilege(%s, %s, 'CONNECT')", (spec.name, dbname)))[0]:
            problems.append("no CONNECT")
        actual = conn.execute(
            "SELECT t, p, has_table_privilege(%s, format('public.%%I', t), p),"
            " p = ANY(%s::text[]) AND has_any_column_privilege(%s, format('public.%%I', t), p)"
            " FROM unnest(%s::text[]) t CROSS JOIN unnest(%s::text[]) p",
            (spec.name, list(COLUMN_PRIVILEGES), spec.name, names, list(TABLE_PRIVILEGES)),
        ).fetchall()
        for table, privilege, granted, on_columns in sorted(
            actual, key=lambda x: (x[0] in partitions, x[0], TABLE_PRIVILEGES.index(x[1]))
        ):
            wanted = privilege in expected_privileges(spec.name, table) and table not in partitions
            if wanted and not granted:
                problems.append(f"no {privilege} on {table}")
            elif granted and not wanted:
                problems.append(f"has {privilege} on {'partition ' if table in partitions else ''}{table}")
            elif on_columns and not wanted:
                problems.append(f"has {privilege} on columns of {table}")
        for fn, roles in functions:
            can_run = one_row(conn.execute("SELECT has_function_privilege(%s, %s, 'EXECUTE')", (spec.name, fn)))[0]
            if can_run != (spec.name in roles):
                problems.append(f"{'can' if can_run else 'cannot'} EXECUTE {fn}")
        more = f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
        rows.append({"role": spec.name, "ok": not problems, "problem": "; ".join(problems[:5]) + more or None})
    return rows


def _role_problems(conn: psycopg.Connection, role: str) -> list[str]:
    """Attributes, memberships and schema CREATE a service role (or the owner) must not have."""
    problems = []
    row = one_row(conn.execute(f"SELECT {', '.join(ROLE_ATTRIBUTES)} FROM pg_roles WHERE rolname = %s", (role,)))
    problems += [f"is {name}" for name, on in zip(ROLE_ATTRIBUTES.values(), row, strict=True) if on]
    for (granted,) in conn.execute(
        "SELECT r.rolname FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid"
        " WHERE m.member = %s::regrole ORDER BY 1",
        (role,),
    ).fetchall():
        problems.append(f"member of {granted}")
    if role != OWNER_ROLE:
        for (schema,) in conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%%' AND nspname <> 'information_schema'"
            " AND has_schema_privilege(%s, oid, 'CREATE') ORDER BY 1",
            (role,),
        ).fetchall():
            if schema != OWN_SCHEMAS.get(role):  # its own schema (the exporter's Iceberg catalog) is the exception
                problems.append(f"has CREATE on schema {schema}")
    return problems


def check_owner(conn: psycopg.Connection) -> dict:
    """The owner role exists, holds no attribute or membership, and owns every object of schema public (preflight)."""
    if not role_exists(conn, OWNER_ROLE):
        return {"ok": False, "problem": f"role {OWNER_ROLE} missing (kalshictl init-db or migrate creates it)"}
    problems = _role_problems(conn, OWNER_ROLE)
    others = conn.execute(
        "SELECT c.relname, pg_get_userbyid(c.relowner) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm') AND c.relowner <> %s::regrole"
        " AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid"
        "  AND d.deptype = 'e') ORDER BY 1",
        (OWNER_ROLE,),
    ).fetchall()
    if others:
        more = f" (+{len(others) - 3} more)" if len(others) > 3 else ""
        listed = ", ".join(f"{t} by {o}" for t, o in others[:3])
        problems.append(f"owned by another role: {listed}{more} (run kalshictl migrate)")
    return {"ok": not problems, "problem": "; ".join(problems) or None}


def require_password(value: str | None, role: str) -> str:
    """Raise a clear error if a role's password secret is missing."""
    if not value:
        raise KalshiCtlError(
            f"roles.{role}: no password secret configured", hint="set roles.<role> to env:/file:/aws-sm:"
        )
    return value
