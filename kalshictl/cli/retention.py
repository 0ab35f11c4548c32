"""``kalshictl retention run``: drop partitions older than keep_days whose rows every next tier holds."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from kalshictl.cli.common import CONFIG_OPTION, JSON_OPTION

if TYPE_CHECKING:
    from kalshictl.db.retention import PartitionVerdict

app = typer.Typer(help="Keep each tier's storage bounded (docs/retention.md).", no_args_is_help=True)


@app.command("run")
def run_cmd(
    config: Path = CONFIG_OPTION,
    keep_days: float | None = typer.Option(
        None, "--keep-days", min=0, help="Keep partitions newer than this many days (default: retention.keep_days)."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be dropped; drop nothing."),
    as_json: bool = JSON_OPTION,
) -> None:
    """One retention pass: drop each partition older than keep_days whose every row the deduplicator has merged;
    report each one kept because it is not merged (kept whatever its age). With a deduplicator config: drop
    production days older than production.keep_days whose verified cold-tier export the ledger holds."""
    from kalshictl.cli import output
    from kalshictl.cli.common import load
    from kalshictl.ops.retention import run

    settings = load(config)
    if settings.gatherer is None and settings.deduplicator is not None:
        from kalshictl.cli.cold import production_retention

        production_retention(settings, keep_days, dry_run, as_json)
        return

    def progress(p: PartitionVerdict) -> None:
        if not as_json:
            output.info(f"{p.table}/{p.partition}: {p.outcome or ('would drop' if p.verdict == 'drop' else p.verdict)}")

    result = run(settings, keep_days=keep_days, dry_run=dry_run, on_partition=progress)
    summary = result.as_dict()
    if as_json:
        output.emit_json(summary)
        return
    from datetime import UTC, datetime

    def when(us: int) -> str:
        return datetime.fromtimestamp(us / 1e6, tz=UTC).strftime("%Y-%m-%d %H:%M")

    rows = [
        {
            "partition": p.partition,
            "from (UTC)": when(p.range_from),
            "hours": round((p.range_to - p.range_from) / 3.6e9, 1),
            "~rows": p.approx_rows,
            "MB": round(p.bytes / 1e6, 1),
            "result": p.outcome or ("would drop" if p.verdict == "drop" else p.verdict),
        }
        for p in result.partitions
    ]
    title = f"retention: keep {result.keep_days:g} days, cutoff {when(result.cutoff_us)} UTC"
    title += " (dry run)" if dry_run else ""
    output.console.print(output.table(rows, list(rows[0]) if rows else ["partition", "result"], title=title))
    verb = "would drop" if dry_run else "dropped"
    n, size = (
        (summary["would_drop"], summary["would_drop_bytes"])
        if dry_run
        else (summary["dropped"], summary["dropped_bytes"])
    )
    output.info(
        f"{verb} {n} partition(s), {size:,} bytes; held {summary['held']} (not merged), {summary['held_bytes']:,} bytes"
    )
