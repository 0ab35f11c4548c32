"""``kalshictl export``: production tables -> Parquet on S3 (or any S3-compatible store), per table and UTC day."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from kalshictl.cli.common import CONFIG_OPTION, JSON_OPTION


def _progress_hooks(total: int) -> tuple[Any, Any]:
    """A rich progress bar on stderr (TTY only) and the hooks that drive it."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from kalshictl.cli.output import err_console
    from kalshictl.research.export import ExportHooks

    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rows]:,} rows"),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
    )
    task = progress.add_task("export", total=total, rows=0)

    def start(table: str, day: Any) -> None:
        progress.update(task, description=f"{table} {day}")

    def rows(n: int) -> None:
        progress.update(task, rows=progress.tasks[task].fields["rows"] + n)

    def done(_res: Any) -> None:
        progress.advance(task)

    return progress, ExportHooks(on_partition_start=start, on_rows=rows, on_partition_done=done)


def register(root: typer.Typer) -> None:
    """Add ``export`` to the root app."""

    @root.command("export")
    def export_cmd(
        config: Path = CONFIG_OPTION,
        table: list[str] = typer.Option([], "--table", help="Table to export (repeatable)."),
        all_tables: bool = typer.Option(False, "--all", help="Every event table."),
        from_: str = typer.Option(..., "--from", help="First UTC day, YYYY-MM-DD."),
        to: str = typer.Option(..., "--to", help="Last UTC day (inclusive), YYYY-MM-DD."),
        dest: str | None = typer.Option(None, "--dest", help="s3://bucket/prefix (default: exporter.s3.dest)."),
        endpoint_url: str | None = typer.Option(None, "--endpoint-url", help="S3-compatible endpoint (MinIO, moto)."),
        by_series: bool = typer.Option(False, "--by-series", help="Also partition by series (series=S/)."),
        force: bool = typer.Option(False, "--force", help="Re-export partitions even if their manifest is complete."),
        as_json: bool = JSON_OPTION,
    ) -> None:
        """Write Parquet partitioned by table and UTC day, with manifests; re-runs skip complete partitions."""
        import sys

        from kalshictl.cli import output
        from kalshictl.cli.common import load
        from kalshictl.db.connect import connect
        from kalshictl.errors import ConfigError
        from kalshictl.research.export import (
            ExportHooks,
            ExportJob,
            env_crash_hook,
            parse_dest,
            run_export,
            s3_client,
        )
        from kalshictl.research.times import days, parse_day
        from kalshictl.schema import TABLES

        settings = load(config).require("exporter")
        if all_tables == bool(table):
            raise ConfigError("say which tables: --table T (repeatable) or --all")
        tables = list(TABLES) if all_tables else table
        target = dest or settings.s3.dest
        if not target:
            raise ConfigError("--dest: no destination (or set exporter.s3.dest)")
        bucket, prefix = parse_dest(target)
        job = ExportJob(tables, days(parse_day(from_, what="--from"), parse_day(to, what="--to")), bucket, prefix)
        job.by_series, job.force = by_series, force
        client = s3_client(settings.s3, endpoint_url)
        progress = None
        hooks = ExportHooks()
        if not as_json and sys.stderr.isatty():
            progress, hooks = _progress_hooks(len(tables) * len(job.days))
        hooks.after_part = env_crash_hook()
        with connect(settings.production, autocommit=True) as conn:
            if progress is not None:
                with progress:
                    results = run_export(conn, client, settings, job, hooks)
            else:
                results = run_export(conn, client, settings, job, hooks)
        data = {
            "dest": f"s3://{bucket}/{prefix}",
            "partitions": [r.as_dict() for r in results],
            "exported": sum(r.status == "exported" for r in results),
            "skipped": sum(r.status == "skipped" for r in results),
            "rows": sum(r.rows for r in results if r.status == "exported"),
        }
        if as_json:
            output.emit_json(data)
            return
        output.console.print(output.table(data["partitions"], title=f"export to {data['dest']}"))
        output.console.print(
            f"{data['exported']} partition(s) exported ({data['rows']:,} rows), {data['skipped']} skipped"
        )
