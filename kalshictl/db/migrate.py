"""Versioned, transactional, concurrency-safe migrations for the gatherer and production schemas.

See migrations/README.md for the file layout and the ``{{partition:..}}`` / ``{{timeseries:..}}`` templates that let
one SQL file build TimescaleDB hypertables when the extension is available and native range partitions otherwise.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from kalshictl.db.roles import Target
from kalshictl.db.rows import one_row, one_row_async
from kalshictl.errors import ConfigError, KalshiCtlError

if TYPE_CHECKING:
    import psycopg

Flavor = Literal["hypertable", "partitioned"]
FLAVORS: tuple[Flavor, ...] = ("hypertable", "partitioned")

ADVISORY_LOCK_KEY = 0x6B616C7368690001  # "kalshi" + 1
VERSION_TABLE = "kalshi_schema_version"
_FILE_RE = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")
_PARTITION_RE = re.compile(r"\{\{partition:([a-z_]+)\}\}")
_TIMESERIES_RE = re.compile(r"\{\{timeseries:([a-z_]+),([a-z_]+),(\d+)\}\}")


def migrations_root() -> Path:
    """The repository's migrations/ directory (override with KALSHI_MIGRATIONS_DIR)."""
    import os

    env = os.environ.get("KALSHI_MIGRATIONS_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "migrations"


@dataclass(frozen=True)
class Migration:
    """One versioned SQL file."""

    version: int
    name: str
    path: Path
    template: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.template.encode()).hexdigest()[:16]


@dataclass
class MigrationStatus:
    """Applied and pending migrations of one database."""

    target: str
    flavor: Flavor
    applied: list[dict]
    pending: list[Migration]
    mismatched: list[int]

    def as_dict(self) -> dict:
        return {
            "target": self.target,
            "flavor": self.flavor,
            "applied": self.applied,
            "pending": [{"version": m.version, "name": m.name} for m in self.pending],
            "checksum_mismatch": self.mismatched,
            "current": not self.pending,
        }


def load_migrations(target: Target, root: Path | None = None) -> list[Migration]:
    """Read and order the migration files of a target."""
    if target not in ("gatherer", "production"):
        raise ConfigError(f"--target: expected gatherer or production, got {target!r}")
    base = root or migrations_root()
    folder = base / target
    if not folder.is_dir():
        raise KalshiCtlError(f"migrations folder not found: {folder}")
    out = []
    # common/ holds what every database gets (helpers); versions are unique across common/ and the target's folder
    for path in sorted([*(base / "common").glob("*.sql"), *folder.iterdir()], key=lambda p: p.name):
        match = _FILE_RE.match(path.name)
        if match:
            out.append(Migration(int(match.group(1)), match.group(2), path, path.read_text()))
    versions = [m.version for m in out]
    if len(set(versions)) != len(versions):
        raise KalshiCtlError(f"duplicate migration versions in {base / 'common'} and {folder}")
    return out


def render(template: str, flavor: Flavor) -> str:
    """Render the partition/timeseries placeholders for a flavour."""

    def partition(match: re.Match) -> str:
        return "" if flavor == "hypertable" else f"PARTITION BY RANGE ({match.group(1)})"

    def timeseries(match: re.Match) -> str:
        table, column, chunk = match.group(1), match.group(2), int(match.group(3))
        if flavor == "hypertable":
            return (
                f"SELECT create_hypertable('{table}', '{column}', chunk_time_interval => {chunk}, "
                f"if_not_exists => true);\n"
                f"INSERT INTO kalshi_timeseries VALUES ('{table}', '{column}', {chunk}, 'hypertable') "
                f"ON CONFLICT (table_name) DO NOTHING;"
            )
        return (
            f"CREATE TABLE IF NOT EXISTS {table}_default PARTITION OF {table} DEFAULT;\n"
            f"INSERT INTO kalshi_timeseries VALUES ('{table}', '{column}', {chunk}, 'partitioned') "
            f"ON CONFLICT (table_name) DO NOTHING;"
        )

    return _TIMESERIES_RE.sub(timeseries, _PARTITION_RE.sub(partition, template))


def detect_flavor(conn: psycopg.Connection, *, allow_timescale: bool = True) -> Flavor:
    """``hypertable`` if the timescaledb extension is installed or installable, else ``partitioned``."""
    installed, available = one_row(
        conn.execute(
            "SELECT (SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'),"
            "       (SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb')"
        )
    )
    if installed:
        return "hypertable"
    return "hypertable" if (available and allow_timescale) else "partitioned"


def _ensure_version_table(conn: psycopg.Connection) -> None:
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} ("
        " version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL, flavor text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now())"
    )


def _applied(conn: psycopg.Connection) -> list[dict]:
    exists = one_row(conn.execute("SELECT to_regclass(%s) IS NOT NULL", (VERSION_TABLE,)))[0]
    if not exists:
        return []
    rows = conn.execute(
        f"SELECT version, name, checksum, flavor, applied_at FROM {VERSION_TABLE} ORDER BY version"
    ).fetchall()
    return [
        {"version": v, "name": n, "checksum": c, "flavor": f, "applied_at": a.isoformat()} for v, n, c, f, a in rows
    ]


def status(conn: psycopg.Connection, target: Target, root: Path | None = None) -> MigrationStatus:
    """Compare the database with the migration files (read-only)."""
    migrations = load_migrations(target, root)
    applied = _applied(conn)
    done = {row["version"]: row for row in applied}
    flavor: Flavor = applied[0]["flavor"] if applied else detect_flavor(conn)
    mismatched = [m.version for m in migrations if m.version in done and done[m.version]["checksum"] != m.checksum]
    pending = [m for m in migrations if m.version not in done]
    return MigrationStatus(target, flavor, applied, pending, mismatched)


def migrate(
    conn: psycopg.Connection,
    target: Target,
    *,
    dry_run: bool = False,
    root: Path | None = None,
    flavor: Flavor | None = None,
    on_apply: Callable[[Migration], None] | None = None,
) -> MigrationStatus:
    """Apply pending migrations, each in its own transaction, under an advisory lock, as the owner role.

    The owner role (:data:`kalshictl.db.roles.OWNER_ROLE`, no superuser) is created if missing and given every object
    of schema public first; the migrations then run under ``SET ROLE`` to it, and each service role gets exactly its
    privileges (kalshictl/db/roles.py, docs/security.md) on what they created.

    ``conn`` must be in autocommit mode (the lock is session-level). Returns the status *before* applying, with
    ``pending`` listing what was (or, with ``dry_run``, would be) applied.
    """
    if not conn.autocommit:
        raise KalshiCtlError("migrate needs an autocommit connection")
    conn.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
    try:
        before = status(conn, target, root)
        if before.mismatched:
            raise KalshiCtlError(
                f"applied migrations changed on disk: versions {before.mismatched}",
                hint="never edit an applied migration; add a new one",
            )
        chosen: Flavor = flavor or before.flavor
        if dry_run:
            return before
        if before.pending and chosen == "hypertable":
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        from kalshictl.db.roles import acting_as, apply_object_grants, ensure_owner

        with conn.transaction():
            owner = ensure_owner(conn)
        with acting_as(conn, owner):  # every object is created by (and owned by) the owner role, never a superuser
            for mig in before.pending:
                sql = render(mig.template, chosen)
                with conn.transaction():
                    _ensure_version_table(conn)
                    conn.execute(sql)
                    conn.execute(
                        f"INSERT INTO {VERSION_TABLE} (version, name, checksum, flavor) VALUES (%s, %s, %s, %s)",
                        (mig.version, mig.name, mig.checksum, chosen),
                    )
                if on_apply is not None:
                    on_apply(mig)
            conn.execute("SELECT kalshi_ensure_partitions()")
            # every role gets exactly the policy (kalshictl/db/roles.py) on every object: new tables get their grants,
            # and a database an older version set up (a superuser owner, GRANT ALL) is brought to it with no migration
            apply_object_grants(conn, target)
        before.flavor = chosen
        return before
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY,))


# Creates upcoming range partitions (0 on TimescaleDB, whose hypertables need none); the services run it hourly.
ENSURE_PARTITIONS_SQL = (
    "SELECT CASE WHEN to_regprocedure('kalshi_ensure_partitions(bigint)') IS NULL THEN 0"
    " ELSE kalshi_ensure_partitions() END"
)


def ensure_partitions(conn: psycopg.Connection) -> int:
    """Create upcoming range partitions (no-op on TimescaleDB); returns how many were created."""
    return int(one_row(conn.execute(ENSURE_PARTITIONS_SQL))[0])


async def ensure_partitions_async(conn: psycopg.AsyncConnection) -> int:
    """:func:`ensure_partitions` on an async connection."""
    cur = await conn.execute(ENSURE_PARTITIONS_SQL)
    return int((await one_row_async(cur))[0])
