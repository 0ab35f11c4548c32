"""The one output helper: rich tables for people, JSON for machines, errors on stderr."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

console = Console()
err_console = Console(stderr=True, soft_wrap=True)


def _default(obj: Any) -> Any:
    if isinstance(obj, set | frozenset):
        return sorted(obj)
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    return str(obj)


def emit_json(data: Any) -> None:
    """Write ``data`` as indented JSON on stdout."""
    sys.stdout.write(orjson.dumps(data, default=_default, option=orjson.OPT_INDENT_2).decode() + "\n")
    sys.stdout.flush()


def table(
    rows: Iterable[Mapping[str, Any]],
    columns: Sequence[str] | None = None,
    *,
    title: str | None = None,
    styles: Mapping[str, str] | None = None,
) -> Table:
    """Build a rich table from dict rows (columns default to the first row's keys)."""
    rows = list(rows)
    if columns is None:
        columns = list(rows[0].keys()) if rows else []
    out = Table(title=title, show_lines=False)
    for col in columns:
        out.add_column(col, style=(styles or {}).get(col))
    for row in rows:
        out.add_row(*[_cell(row.get(col)) for col in columns])
    return out


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


STATUS_STYLE = {"healthy": "green", "degraded": "yellow", "unhealthy": "red", "pass": "green", "fail": "red"}


def styled_status(status: str) -> str:
    """Colour a status word for the terminal."""
    style = STATUS_STYLE.get(status)
    return f"[{style}]{status}[/{style}]" if style else status


def error(message: str, hint: str | None = None) -> None:
    """Print an error (and optional hint) on stderr."""
    err_console.print(f"[bold red]error:[/bold red] {message}", highlight=False, markup=True)
    if hint:
        err_console.print(f"[dim]hint:[/dim] {hint}", highlight=False)


def info(message: str) -> None:
    """Print a progress/info line on stderr (keeps stdout clean for --json)."""
    err_console.print(message, highlight=False)
