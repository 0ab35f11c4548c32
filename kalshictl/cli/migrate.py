"""``kalshictl migrate``: apply or inspect the versioned schema of a gatherer or production database."""

from __future__ import annotations

from pathlib import Path

import typer

from kalshictl.cli.common import CONFIG_OPTION, JSON_OPTION, TARGET_OPTION


def migrate_cmd(
    action: str = typer.Argument("up", help="up (apply pending, default) or status"),
    config: Path = CONFIG_OPTION,
    target: str | None = TARGET_OPTION,
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be applied; change nothing."),
    flavor: str | None = typer.Option(None, help="Force hypertable or partitioned (default: detect)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Build or upgrade the schema (TimescaleDB hypertables when available, native partitions otherwise)."""
    from kalshictl.cli import output
    from kalshictl.cli.common import choose, load, resolve_target
    from kalshictl.db import migrate as mig
    from kalshictl.db.connect import connect
    from kalshictl.db.dsn import describe
    from kalshictl.errors import ConfigError

    if action not in ("up", "status"):
        raise ConfigError(f"migrate: unknown action {action!r} (use up or status)")
    forced = None if flavor is None else choose("--flavor", flavor, mig.FLAVORS)
    settings = load(config)
    tgt, db = resolve_target(settings, target)
    with connect(db, admin=True, autocommit=True) as conn:
        if action == "status":
            st = mig.status(conn, tgt)
        else:
            st = mig.migrate(
                conn,
                tgt,
                dry_run=dry_run,
                flavor=forced,
                on_apply=None if as_json else (lambda m: output.info(f"applied {m.version:03d}_{m.name}")),
            )
    data = st.as_dict()
    data["database"] = describe(db.admin_dsn or db.dsn)
    data["dry_run"] = dry_run
    if action == "up":
        data["applied_now"] = [] if dry_run else data["pending"]
    if as_json:
        output.emit_json(data)
        return
    if action == "status" or dry_run:
        rows = [
            {"version": r["version"], "name": r["name"], "state": "applied", "flavor": r["flavor"]} for r in st.applied
        ]
        rows += [{"version": m.version, "name": m.name, "state": "pending", "flavor": st.flavor} for m in st.pending]
        output.console.print(
            output.table(rows, ["version", "name", "state", "flavor"], title=f"{tgt} schema on {data['database']}")
        )
    elif st.pending:
        output.console.print(f"{tgt}: applied {len(st.pending)} migration(s) ({st.flavor}) on {data['database']}")
    else:
        output.console.print(f"{tgt}: schema is current ({st.flavor}) on {data['database']}; nothing to do")
