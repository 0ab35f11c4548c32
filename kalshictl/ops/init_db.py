"""Database initialisation: database, extension, roles, grants, pg_hba lines."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kalshictl.db import roles as r
from kalshictl.db.connect import connect
from kalshictl.db.dsn import parse_dsn, with_params
from kalshictl.errors import ConfigError

if TYPE_CHECKING:
    from kalshictl.config import DatabaseSettings, Settings
    from kalshictl.db.roles import Target


def init_database(
    settings: Settings, target: Target, db: DatabaseSettings, *, remote_cidr: str = "10.0.0.0/8", timescale: bool = True
) -> dict:
    """Create the target database if missing, enable TimescaleDB if available, ensure the owner role (which owns the
    schema and runs the migrations, see kalshictl/db/roles.py) and the service roles.

    Connects with ``admin_dsn`` (falling back to ``dsn``) first to the ``postgres`` maintenance database, then to
    the target database. Each role's password comes from ``roles.<name>`` in the config (a secret reference).
    """
    r.check_cidr(remote_cidr)  # before anything changes: it is pasted into pg_hba lines
    admin_dsn = db.admin_dsn or db.dsn
    dbname = parse_dsn(db.dsn).get("dbname")
    if not dbname:
        raise ConfigError("database.dsn: no dbname in the DSN")
    maintenance = db.model_copy(update={"admin_dsn": with_params(admin_dsn, dbname="postgres")})
    with connect(maintenance, admin=True, autocommit=True) as conn:
        created = r.ensure_database(conn, dbname)
    target_admin = db.model_copy(update={"admin_dsn": with_params(admin_dsn, dbname=dbname)})
    roles_out = []
    timescale_on = False
    with connect(target_admin, admin=True, autocommit=True) as conn:
        if timescale and conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone():
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            timescale_on = True
        with conn.transaction():
            owner = r.ensure_owner(conn)  # owns the schema's objects and runs the migrations (not a superuser)
        for spec in r.roles_for(target):
            ref = getattr(settings.roles, spec.name)
            password = ref.resolve() if ref is not None else None
            if password is None and not r.role_exists(conn, spec.name):
                raise ConfigError(
                    f"roles.{spec.name}: no password secret configured for a new role",
                    hint=f"set roles.{spec.name}: env:NAME | file:/path | aws-sm:id",
                )
            roles_out.append(r.ensure_role(conn, spec, password, dbname))
    return {
        "target": target,
        "database": dbname,
        "database_created": created,
        "timescaledb": timescale_on,
        "owner": owner,
        "roles": roles_out,
        "pg_hba": r.hba_lines(target, dbname, remote_cidr),
    }
