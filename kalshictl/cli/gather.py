"""``kalshictl gather``: run the gatherer (``run``) or inspect a running one (``status``)."""

from __future__ import annotations

from pathlib import Path

import typer

from kalshictl.cli.common import CONFIG_OPTION, JSON_OPTION

app = typer.Typer(help="Record every Kalshi market into the local database.", no_args_is_help=True)


@app.command("run")
def run_cmd(config: Path = CONFIG_OPTION) -> None:
    """Run the gatherer until SIGTERM/SIGINT (graceful: stop receiving, flush, close sockets, close DB)."""
    import asyncio
    import signal

    from kalshictl.cli.common import load
    from kalshictl.gatherer.service import Gatherer
    from kalshictl.logs import setup_logging

    settings = load(config)
    gs = settings.require("gatherer")
    setup_logging(settings.log_level)

    async def main() -> None:
        g = Gatherer(gs)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, g.request_stop)
        await g.run()

    asyncio.run(main())


@app.command("status")
def status_cmd(
    config: Path = CONFIG_OPTION,
    as_json: bool = JSON_OPTION,
    url: str | None = typer.Option(None, help="Base URL of the gatherer (default: from the config's http)."),
) -> None:
    """Show the running gatherer's registry size, connections, market placement, resyncing markets, command rate,
    lag and buffer depth."""
    import httpx

    from kalshictl.cli import output
    from kalshictl.cli.common import load
    from kalshictl.errors import KalshiCtlError, Unhealthy

    gs = load(config).require("gatherer")
    host = "127.0.0.1" if gs.http.host in ("0.0.0.0", "::") else gs.http.host
    base = url or f"http://{host}:{gs.http.port}"
    try:
        status = httpx.get(f"{base}/status", timeout=5).json()
        health_resp = httpx.get(f"{base}/health", timeout=5)
        health = health_resp.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise KalshiCtlError(f"gatherer at {base} not reachable: {exc}", hint="is `kalshictl gather run` up?") from None
    data = {"health": health, "status": status}
    if as_json:
        output.emit_json(data)
    else:
        conns = status.get("connections", {})
        cov = status.get("coverage") or {}
        rows = [
            {"key": "status", "value": output.styled_status(health.get("status", "?"))},
            {"key": "phase", "value": status.get("phase")},
            {"key": "markets", "value": status.get("registry", {}).get("markets")},
            {"key": "connections", "value": f"{conns.get('healthy')}/{conns.get('target')} healthy"},
            {"key": "reconnects", "value": conns.get("reconnects")},
            {
                "key": "placed",
                "value": f"{cov.get('placed')}/{cov.get('recordable')} recordable (capacity {cov.get('capacity')})",
            },
            {"key": "unplaced", "value": cov.get("unplaced")},
            {"key": "resyncing", "value": cov.get("resyncing")},
            {
                "key": "commands_per_min",
                "value": f"{conns.get('commands_last_minute_max')}/{conns.get('commands_per_minute_budget')}"
                " (busiest connection / budget)",
            },
            {"key": "messages", "value": sum((status.get("messages") or {}).values())},
            {"key": "lag_s", "value": status.get("lag_s")},
            {"key": "buffer_rows", "value": status.get("buffer_rows")},
            {"key": "parse_errors", "value": status.get("parse_errors")},
            *_storage_rows(health.get("details") or {}),
        ]
        output.console.print(output.table(rows, ["key", "value"], title=f"gatherer {status.get('name')}"))
    if health_resp.status_code == 503:
        raise Unhealthy(f"gatherer {status.get('name')} is unhealthy")


def _storage_rows(details: dict) -> list[dict]:
    """The disk and retention lines of ``gather status`` from /health's details (docs/retention.md)."""
    disk, ret = details.get("disk") or {}, details.get("retention") or {}
    pct = disk.get("free_percent")
    free = "unknown" if pct is None else f"{pct:.1f}% free ({(disk.get('free_bytes') or 0) / 1e9:,.1f} GB)"
    keep = "?" if ret.get("keep_days") is None else f"{ret['keep_days']:g}"
    held = "-" if ret.get("held") is None else ret["held"]
    oldest = ret.get("oldest_held_age_days") or 0
    return [
        {"key": "disk", "value": f"{disk.get('status', '?')}: {free}, from {disk.get('source', '?')}"},
        {
            "key": "retention",
            "value": f"{ret.get('status', '?')}: keep {keep} days, {held} partitions held (oldest {oldest} days)",
        },
    ]
