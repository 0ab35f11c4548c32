"""The seed's database roles, created with exactly the seed's privileges, and SCRAM password handling.

Passwords are never sent to the server in plaintext: the SCRAM-SHA-256 verifier is computed on the client with
libpq's ``PQencryptPasswordConn`` and ``ALTER ROLE ... PASSWORD '<verifier>'`` carries only the verifier, so a
statement log shows nothing reusable.
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


def grant_statements(role: RoleSpec, dbname: str) -> list[str]:
    """The seed's GRANT statements for a role, verbatim in meaning."""
    from psycopg import sql

    db = sql.Identifier(dbname).as_string(None)
    r = sql.Identifier(role.name).as_string(None)
    if role.read_only:
        return [
            f"GRANT CONNECT ON DATABASE {db} TO {r}",
            f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {r}",
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {r}",
        ]
    return [
        f"GRANT CONNECT ON DATABASE {db} TO {r}",
        f"GRANT ALL PRIVILEGES ON ALL TABLES IN SCHEMA public TO {r}",
        f"GRANT ALL PRIVILEGES ON ALL SEQUENCES IN SCHEMA public TO {r}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO {r}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON SEQUENCES TO {r}",
    ]


def scram_verifier(conn: psycopg.Connection, role: str, password: str) -> str:
    """Compute a SCRAM-SHA-256 verifier on the client (libpq PQencryptPasswordConn)."""
    verifier = conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256")
    return verifier.decode()


def set_password(conn: psycopg.Connection, role: str, password: str) -> None:
    """ALTER ROLE .. PASSWORD with a client-computed SCRAM verifier (never the plaintext)."""
    from psycopg import sql

    verifier = scram_verifier(conn, role, password)
    # Keep the statement itself out of the server log even at log_statement=all (it holds only a verifier anyway).
    conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(verifier)))


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
    for stmt in grant_statements(spec, dbname):
        conn.execute(stmt)
    return {"role": spec.name, "created": created, "password_set": password is not None, "read_only": spec.read_only}


def hba_lines(target: Target, dbname: str, remote_cidr: str = "10.0.0.0/8") -> list[str]:
    """The pg_hba.conf lines of the seed for a target."""
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
    """Compare each role's actual table privileges with the seed (for preflight). One row per role."""
    rows = []
    tables = [
        r[0]
        for r in conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY 1"
        ).fetchall()
    ]
    for spec in roles_for(target):
        if not role_exists(conn, spec.name):
            rows.append({"role": spec.name, "ok": False, "problem": "role missing"})
            continue
        problems = []
        if not conn.execute("SELECT has_database_privilege(%s, %s, 'CONNECT')", (spec.name, dbname)).fetchone()[0]:
            problems.append("no CONNECT")
        for table in tables:
            can_select, can_insert = conn.execute(
                "SELECT has_table_privilege(%s, %s, 'SELECT'), has_table_privilege(%s, %s, 'INSERT')",
                (spec.name, f"public.{table}", spec.name, f"public.{table}"),
            ).fetchone()
            if not can_select:
                problems.append(f"no SELECT on {table}")
            if spec.read_only and can_insert:
                problems.append(f"can write {table}")
            if not spec.read_only and not can_insert:
                problems.append(f"no INSERT on {table}")
        rows.append({"role": spec.name, "ok": not problems, "problem": "; ".join(problems[:5]) or None})
    return rows


def require_password(value: str | None, role: str) -> str:
    """Raise a clear error if a role's password secret is missing."""
    if not value:
        raise KalshiCtlError(
            f"roles.{role}: no password secret configured", hint="set roles.<role> to env:/file:/aws-sm:"
        )
    return value
