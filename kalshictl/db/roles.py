"""The seed's database roles with least privilege (see docs/security.md), and SCRAM password handling.

Passwords are never sent to the server in plaintext: the SCRAM-SHA-256 verifier is computed on the client with
libpq's ``PQencryptPasswordConn`` and ``ALTER ROLE ... PASSWORD '<verifier>'`` carries only the verifier. A verifier
still allows an offline guessing attack, so the statement runs with ``log_statement``/``log_min_duration_statement``/
``log_min_error_statement`` switched off for its transaction when the admin may change them (a superuser; on
PostgreSQL 15+ also a role granted SET on them). Where it may not (e.g. RDS without those grants), keep
``log_statement`` below ``ddl`` on that server during rotation (docs/security.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from kalshictl.errors import KalshiCtlError

if TYPE_CHECKING:
    import psycopg

Target = Literal["gatherer", "production"]


@dataclass(frozen=True)
class RoleSpec:
    """One role of the seed's user inventory."""

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
# What each role may do on every table of its database ...
BASE_PRIVILEGES: dict[str, frozenset[str]] = {
    "gatherer": frozenset({"SELECT", "INSERT"}),
    "dedup_reader": frozenset({"SELECT"}),
    "deduplicator": frozenset(TABLE_PRIVILEGES),  # the seed's GRANT ALL: it upserts, resets cursors, closes gaps
    "exporter": frozenset({"SELECT"}),
}
# ... plus its own bookkeeping: the gatherer's coverage heartbeat (gatherer_meta) and gap windows it closes.
EXTRA_PRIVILEGES: dict[str, dict[str, frozenset[str]]] = {
    "gatherer": {"gatherer_meta": frozenset({"UPDATE"}), "sequence_gaps": frozenset({"UPDATE"})},
}
# A schema of its own where a role may create tables (docs/security.md): the exporter keeps the Iceberg SQL catalog's
# tables there (it stays read-only on every table of public).
OWN_SCHEMAS: dict[str, str] = {"exporter": "iceberg"}
# Migration bookkeeping: the partition function trusts kalshi_timeseries, so only the owner writes these; the
# retention functions trust the merge ledger and keep the audit log (migrations/gatherer/019_retention.sql).
OWNER_WRITES_ONLY = ("kalshi_schema_version", "kalshi_timeseries", "kalshi_merge_ledger", "kalshi_retention_log")
# Sequence privileges (bigserial ids): the gatherer only draws values.
SEQUENCE_PRIVILEGES: dict[str, str] = {"gatherer": "USAGE", "deduplicator": "ALL"}
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


def expected_privileges(role: str, table: str) -> frozenset[str]:
    """The table privileges a role must have on a table (and, by omission, must not have)."""
    if table in OWNER_WRITES_ONLY:
        return BASE_PRIVILEGES[role] & {"SELECT"}
    return BASE_PRIVILEGES[role] | EXTRA_PRIVILEGES.get(role, {}).get(table, frozenset())


def grant_statements(role: RoleSpec, dbname: str) -> list[str]:
    """GRANT/REVOKE statements giving a role exactly :func:`expected_privileges` on current and future tables.

    Everything is revoked first, so re-running ``init-db`` tightens a role that an older version granted ``ALL``.
    Per-table extras and EXECUTE on the partition function are applied by :func:`object_grant_statements` (those
    objects may not exist yet: ``migrate`` applies them again after creating them).
    """
    from psycopg import sql

    db = sql.Identifier(dbname).as_string(None)
    r = sql.Identifier(role.name).as_string(None)
    base = ", ".join(sorted(BASE_PRIVILEGES[role.name], key=TABLE_PRIVILEGES.index))
    out = [
        f"GRANT CONNECT ON DATABASE {db} TO {r}",
        f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {r}",
        f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {r}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON TABLES FROM {r}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON SEQUENCES FROM {r}",
        f"GRANT {base} ON ALL TABLES IN SCHEMA public TO {r}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT {base} ON TABLES TO {r}",
    ]
    if own := OWN_SCHEMAS.get(role.name):
        schema = sql.Identifier(own).as_string(None)
        out += [f"CREATE SCHEMA IF NOT EXISTS {schema}", f"GRANT USAGE, CREATE ON SCHEMA {schema} TO {r}"]
    seq = SEQUENCE_PRIVILEGES.get(role.name)
    if seq:
        out += [
            f"GRANT {seq} ON ALL SEQUENCES IN SCHEMA public TO {r}",
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT {seq} ON SEQUENCES TO {r}",
        ]
    return out


def object_grant_statements(conn: psycopg.Connection, role: RoleSpec) -> list[str]:
    """Grants on named objects that exist now: per-table extras, no writes on the owner's bookkeeping tables, and
    EXECUTE on the SECURITY DEFINER functions (:data:`FUNCTION_EXECUTE`)."""
    from psycopg import sql

    r = sql.Identifier(role.name).as_string(None)
    out = []
    for table, privileges in EXTRA_PRIVILEGES.get(role.name, {}).items():
        if conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"public.{table}",)).fetchone()[0]:
            names = ", ".join(sorted(privileges, key=TABLE_PRIVILEGES.index))
            out.append(f"GRANT {names} ON {sql.Identifier(table).as_string(None)} TO {r}")
    for table in OWNER_WRITES_ONLY:
        if conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"public.{table}",)).fetchone()[0]:
            writes = ", ".join(p for p in TABLE_PRIVILEGES if p != "SELECT")
            out.append(f"REVOKE {writes} ON {sql.Identifier(table).as_string(None)} FROM {r}")
    for fn, roles in FUNCTION_EXECUTE.items():
        if conn.execute("SELECT to_regprocedure(%s) IS NOT NULL", (fn,)).fetchone()[0]:
            verb = "GRANT" if role.name in roles else "REVOKE"
            prep = "TO" if verb == "GRANT" else "FROM"
            out.append(f"{verb} EXECUTE ON FUNCTION {fn} {prep} {r}")
    return out


def apply_object_grants(conn: psycopg.Connection, target: Target) -> list[str]:
    """After a migration: give the target's existing roles their per-object grants; returns the roles done."""
    done = []
    for spec in roles_for(target):
        if role_exists(conn, spec.name):
            for stmt in object_grant_statements(conn, spec):
                conn.execute(stmt)
            done.append(spec.name)
    return done


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
    if conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0]:
        return True
    if conn.info.server_version < 150000:
        return False
    sql = "SELECT bool_and(has_parameter_privilege(p, 'SET')) FROM unnest(%s::text[]) p"
    return bool(conn.execute(sql, (list(_QUIET),)).fetchone()[0])


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
    """Create the role if missing (LOGIN, no other attributes), set its password, apply the seed's grants."""
    from psycopg import sql

    created = False
    if not role_exists(conn, spec.name):
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(spec.name)))
        created = True
    conn.execute(
        sql.SQL("ALTER ROLE {} NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION LOGIN").format(
            sql.Identifier(spec.name)
        )
    )
    if password is not None:
        set_password(conn, spec.name, password)
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
    """The pg_hba.conf lines of the seed for a target (the CIDR and database name validated first)."""
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
    """Compare each role's actual privileges with :func:`expected_privileges` (for preflight). One row per role.

    Every table privilege is checked both ways: one missing (``no INSERT on trades``) or one too many
    (``has DELETE on trades``) is a problem, and so is EXECUTE on the partition function for a role without it.
    """
    rows = []
    tables = [
        r[0]
        for r in conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY 1"
        ).fetchall()
    ]
    functions = [
        (fn, roles)
        for fn, roles in FUNCTION_EXECUTE.items()
        if conn.execute("SELECT to_regprocedure(%s) IS NOT NULL", (fn,)).fetchone()[0]
    ]
    for spec in roles_for(target):
        if not role_exists(conn, spec.name):
            rows.append({"role": spec.name, "ok": False, "problem": "role missing"})
            continue
        problems = []
        if not conn.execute("SELECT has_database_privilege(%s, %s, 'CONNECT')", (spec.name, dbname)).fetchone()[0]:
            problems.append("no CONNECT")
        actual = conn.execute(
            "SELECT t, p, has_table_privilege(%s, format('public.%%I', t), p)"
            " FROM unnest(%s::text[]) t CROSS JOIN unnest(%s::text[]) p",
            (spec.name, tables, list(TABLE_PRIVILEGES)),
        ).fetchall()
        for table, privilege, granted in sorted(actual, key=lambda x: (x[0], TABLE_PRIVILEGES.index(x[1]))):
            wanted = privilege in expected_privileges(spec.name, table)
            if wanted and not granted:
                problems.append(f"no {privilege} on {table}")
            elif granted and not wanted:
                problems.append(f"has {privilege} on {table}")
        for fn, roles in functions:
            can_run = conn.execute("SELECT has_function_privilege(%s, %s, 'EXECUTE')", (spec.name, fn)).fetchone()[0]
            if can_run != (spec.name in roles):
                problems.append(f"{'can' if can_run else 'cannot'} EXECUTE {fn}")
        more = f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
        rows.append({"role": spec.name, "ok": not problems, "problem": "; ".join(problems[:5]) + more or None})
    return rows


def require_password(value: str | None, role: str) -> str:
    """Raise a clear error if a role's password secret is missing."""
    if not value:
        raise KalshiCtlError(
            f"roles.{role}: no password secret configured", hint="set roles.<role> to env:/file:/aws-sm:"
        )
    return value
