"""``kalshictl init-db``: create the database and its roles with exactly their privileges (docs/security.md)."""

from __future__ import annotations

from pathlib import Path

import typer

from kalshictl.cli.common import CONFIG_OPTION, JSON_OPTION, TARGET_OPTION


def init_db_cmd(
    config: Path = CONFIG_OPTION,
    target: str | None = TARGET_OPTION,
    remote_cidr: str = typer.Option("10.0.0.0/8", help="Network allowed to reach this database (pg_hba)."),
    timescale: bool = typer.Option(True, help="CREATE EXTENSION timescaledb when it is available."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Create the database (if missing) and its roles; print the pg_hba.conf lines. Idempotent."""
    from kalshictl.cli import output
    from kalshictl.cli.common import load, resolve_target
    from kalshictl.ops.init_db import init_database

    settings = load(config)
    tgt, db = resolve_target(settings, target)
    result = init_database(settings, tgt, db, remote_cidr=remote_cidr, timescale=timescale)
    if as_json:
        output.emit_json(result)
        return
    output.console.print(
        f"database {result['database']}: {'created' if result['database_created'] else 'exists'}"
        f"{'; timescaledb enabled' if result['timescaledb'] else ''}"
    )
    output.console.print(output.table(result["roles"], ["role", "created", "password_set", "read_only"], title="roles"))
    output.console.print("\n# pg_hba.conf")
    for line in result["pg_hba"]:
        output.console.print(line, markup=False, highlight=False)
