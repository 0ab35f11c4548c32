"""``kalshictl cold``: production's cold tier — export and verify closed days, drop old days, show the ledger.

``cold export`` is what the ``kalshictl-cold`` systemd timer runs (deploy/systemd/); ``cold retention`` is the same
as ``kalshictl retention run --config deduplicator.yaml``. See docs/deduplicator.md, "Cold tier and production
retention".
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from kalshictl.cli.common import CONFIG_OPTION, JSON_OPTION

if TYPE_CHECKING:
    from kalshictl.config import Settings


def _report(data: dict[str, Any], title: str, as_json: bool) -> None:
    from kalshictl.cli import output

    if as_json:
        output.emit_json(data)
        return
    if data["days"]:
        output.console.print(output.table(data["days"], ["table", "day", "action", "rows", "partitions", "detail"],
                                          title=title))  # fmt: skip
    summary = ", ".join(f"{n} {a}" for a, n in data["summary"].items()) or "nothing to do"
    output.info(f"{title}: {summary}")


def production_retention(settings: Settings, keep_days: float | None, dry_run: bool, as_json: bool) -> None:
    """Production retention, for ``cold retention`` and ``retention run`` with a deduplicator config."""
    from kalshictl.ops.cold_tier import run_retention

    if keep_days is not None and keep_days != int(keep_days):
        from kalshictl.errors import ConfigError

        raise ConfigError(f"--keep-days: production keeps whole UTC days, got {keep_days:g}")
    keep = None if keep_days is None else int(keep_days)
    run = run_retention(settings, keep_days=keep, dry_run=dry_run)
    _report(run.as_dict(), "production retention", as_json)


app = typer.Typer(
    help="Production's cold tier on S3: export + verify closed days, retention, the ledger.", no_args_is_help=True
)


@app.command("export")
def export_cmd(
    config: Path = CONFIG_OPTION,
    table: list[str] = typer.Option([], "--table", help="Only this table (repeatable; default every one)."),
    endpoint_url: str | None = typer.Option(None, "--endpoint-url", help="S3-compatible endpoint (MinIO, moto)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Export every closed UTC day not yet verified, read it back, and record it in the ledger; exit 1 if a day
    could not be verified."""
    from kalshictl.cli.common import load
    from kalshictl.ops.cold_tier import run_export

    run = run_export(load(config), endpoint_url=endpoint_url, tables=table or None)
    _report(run.as_dict(), "cold export", as_json)
    if run.count("unverified"):
        raise typer.Exit(1)


@app.command("retention")
def retention_cmd(
    config: Path = CONFIG_OPTION,
    keep_days: int | None = typer.Option(None, "--keep-days", min=0, help="Default: production.keep_days."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Report what would be dropped; drop nothing."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Drop production days older than keep_days whose verified export the ledger holds."""
    from kalshictl.cli.common import load

    production_retention(load(config), keep_days, dry_run, as_json)


@app.command("status")
def status_cmd(config: Path = CONFIG_OPTION, as_json: bool = JSON_OPTION) -> None:
    """The ledger: every exported table-day, its counts, checksum and whether it left production."""
    from kalshictl.cli import output
    from kalshictl.cli.common import load
    from kalshictl.ops.cold_tier import status

    rows = status(load(config))
    if as_json:
        output.emit_json(rows)
    else:
        cols = ["table_name", "day", "rows", "cold_rows", "checksum", "exports", "verified_at", "dropped_at"]
        output.console.print(output.table(rows, cols, title="cold tier ledger"))
