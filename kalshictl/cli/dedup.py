"""``kalshictl dedup``: run the deduplicator, or show its sync state."""

from __future__ import annotations

from pathlib import Path

import typer

from kalshictl.cli.common import CONFIG_OPTION, JSON_OPTION

app = typer.Typer(help="Deduplicator: merge every gatherer into production exactly once.", no_args_is_help=True)


@app.command("run")
def run_cmd(config: Path = CONFIG_OPTION) -> None:
    """Run the deduplicator until SIGTERM/SIGINT (graceful shutdown)."""
    import asyncio

    from kalshictl.cli.common import load
    from kalshictl.dedup.service import Deduplicator, install_signal_handlers
    from kalshictl.logs import setup_logging

    settings = load(config)
    dedup = settings.require("deduplicator")
    setup_logging(settings.log_level)

    async def main() -> None:
        service = Deduplicator(dedup)
        remove = install_signal_handlers(service)
        try:
            await service.run()
        finally:
            remove()

    asyncio.run(main())


@app.command("status")
def status_cmd(config: Path = CONFIG_OPTION, as_json: bool = JSON_OPTION) -> None:
    """Cursors, lag and row counts per gatherer x table."""
    from kalshictl.cli import output
    from kalshictl.cli.common import load
    from kalshictl.dedup.status import collect_status

    data = collect_status(load(config).require("deduplicator"))
    if as_json:
        output.emit_json(data)
        return
    cols = ["gatherer", "table", "cursor", "rows_read", "rows_merged", "duplicates", "pending", "lag_s",
            "severity", "error"]  # fmt: skip
    output.console.print(output.table(data["tables"], cols, title="deduplicator sync cursors"))
    lag = data["max_lag_seconds"]
    conn = ", ".join(f"{k}: {v}" for k, v in data["gatherers"].items())
    output.console.print(f"gatherers: {conn}; max lag: {'-' if lag is None else f'{lag:.3f}s'}")
    if data["market_sync"]:
        output.console.print(output.table(data["market_sync"], title="market sync"))
