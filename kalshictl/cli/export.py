"""``kalshictl export``: production tables -> Iceberg tables (default) or plain Parquet files on S3 (or any
S3-compatible store), per table and UTC day."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from kalshictl.cli.common import CONFIG_OPTION, JSON_OPTION

if TYPE_CHECKING:
    from kalshictl.config import ExportSettings


def _progress_hooks(total: int) -> tuple[Any, Any]:
    """The Parquet export's progress bar and the hooks that drive it."""
    from kalshictl.research.export import ExportHooks

    progress, start, rows = _progress_bar(total)

    def done(_res: Any) -> None:
        progress.advance(progress.tasks[0].id)

    return progress, ExportHooks(on_partition_start=start, on_rows=rows, on_partition_done=done)


def _progress_bar(total: int) -> tuple[Any, Any, Any]:
    """A rich progress bar on stderr over ``total`` table-days: (progress, on_step(table, day), on_rows(n))."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from kalshictl.cli.output import err_console

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

    def step(table: str, day: Any) -> None:
        progress.update(task, description=f"{table} {day or 'all'}")

    def rows(n: int) -> None:
        progress.update(task, rows=progress.tasks[task].fields["rows"] + n)

    return progress, step, rows


def _export_iceberg(settings: ExportSettings, tables: list[str], days: list[date], warehouse: str | None, *,
                    verify: bool, progress: bool) -> dict[str, Any]:  # fmt: skip
    """Export each table-day as one Iceberg snapshot (state tables once, whole); the --json document."""
    import contextlib

    from kalshictl.errors import ConfigError, KalshiCtlError
    from kalshictl.research import iceberg_types as types
    from kalshictl.research.iceberg import IcebergExporter, env_crash_hook

    for table in tables:
        if table not in types.tables():
            raise ConfigError(f"--table: unknown table {table!r} (one of {', '.join(types.tables())})")
    steps = [(t, d) for t in tables for d in (days if types.time_column(t) else [None])]
    bar, on_step, on_rows = _progress_bar(len(steps)) if progress else (None, None, None)
    out: dict[str, Any] = {}
    failed = []
    with IcebergExporter.open(settings, warehouse=warehouse) as exporter, bar or contextlib.nullcontext():
        exporter.on_rows, exporter.before_commit = on_rows, env_crash_hook()
        for table, day in steps:
            if on_step:
                on_step(table, day)
            res = exporter.export_table_day(table, day)
            entry = out.setdefault(table, {"rows_per_day": {}, "checksums": {}})
            key = day.isoformat() if day else "all"
            entry["rows_per_day"][key] = res.rows
            entry["checksums"][key] = res.checksum
            entry["metadata_location"], entry["snapshot_id"] = res.metadata_location, res.snapshot_id
            if verify:
                check = exporter.verify_table_day(table, day, snapshot_id=res.snapshot_id)
                entry.setdefault("verified", {})[key] = check.ok
                if not check.ok:
                    failed.append(f"{table} {key}")
            if bar is not None:
                bar.advance(bar.tasks[0].id)
    if failed:
        raise KalshiCtlError(f"verification failed (production changed during the export?): {', '.join(failed)}")
    return {
        "format": "iceberg",
        "namespace": settings.iceberg.namespace,
        "tables": out,
        "rows": sum(sum(t["rows_per_day"].values()) for t in out.values()),
    }


def export_cmd(
    config: Path = CONFIG_OPTION,
    table: list[str] = typer.Option([], "--table", help="Table to export (repeatable)."),
    all_tables: bool = typer.Option(False, "--all", help="Every event table."),
    from_: str = typer.Option(..., "--from", help="First UTC day, YYYY-MM-DD."),
    to: str = typer.Option(..., "--to", help="Last UTC day (inclusive), YYYY-MM-DD."),
    dest: str | None = typer.Option(
        None, "--dest", help="s3://bucket/prefix (default: exporter.s3.dest; Iceberg: warehouse of new tables)."
    ),
    endpoint_url: str | None = typer.Option(None, "--endpoint-url", help="S3-compatible endpoint (MinIO, moto)."),
    fmt: str | None = typer.Option(
        None, "--format", help="iceberg (default: exporter.format) or parquet (plain files with manifests)."
    ),
    by_series: bool = typer.Option(False, "--by-series", help="Parquet: also partition by series (series=S/)."),
    force: bool = typer.Option(False, "--force", help="Parquet: re-export partitions even if complete."),
    verify: bool = typer.Option(False, "--verify", help="Iceberg: read each day back and compare with production."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Write Iceberg tables (one snapshot per table and UTC day; a re-export replaces the day), or with
    --format parquet plain Parquet files partitioned by table and day, with manifests."""
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
    fmt = fmt or settings.format
    if fmt not in ("iceberg", "parquet"):
        raise ConfigError(f"--format: expected iceberg or parquet, got {fmt!r}")
    export_days = days(parse_day(from_, what="--from"), parse_day(to, what="--to"))
    if fmt == "iceberg":
        from kalshictl.research.iceberg_types import tables as iceberg_tables

        if by_series or force:
            raise ConfigError("--by-series and --force apply to --format parquet")
        if endpoint_url:
            settings.s3.endpoint_url = endpoint_url
        data = _export_iceberg(
            settings,
            iceberg_tables() if all_tables else table,
            export_days,
            dest,
            verify=verify,
            progress=not as_json and sys.stderr.isatty(),
        )
        if as_json:
            output.emit_json(data)
            return
        rows = [
            {"table": t, "days": len(e["rows_per_day"]), "rows": sum(e["rows_per_day"].values()),
             "snapshot_id": e["snapshot_id"], "metadata_location": e["metadata_location"]}
            for t, e in data["tables"].items()
        ]  # fmt: skip
        output.console.print(output.table(rows, title=f"Iceberg export to namespace {data['namespace']}"))
        output.console.print(f"{len(rows)} table(s), {data['rows']:,} rows")
        return
    if verify:
        raise ConfigError("--verify applies to --format iceberg")
    tables = list(TABLES) if all_tables else table
    target = dest or settings.s3.dest
    if not target:
        raise ConfigError("--dest: no destination (or set exporter.s3.dest)")
    bucket, prefix = parse_dest(target)
    job = ExportJob(tables, export_days, bucket, prefix)
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
    output.console.print(f"{data['exported']} partition(s) exported ({data['rows']:,} rows), {data['skipped']} skipped")
