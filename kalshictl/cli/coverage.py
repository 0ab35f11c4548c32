"""``kalshictl coverage``: sequence gaps per gatherer and in production (windows every gatherer missed)."""

from __future__ import annotations

from pathlib import Path

import typer

from kalshictl.cli.common import CONFIG_OPTION, JSON_OPTION


def coverage_cmd(
    from_: str = typer.Option(..., "--from", help="ISO-8601 or epoch s/ms/µs (a bare date = its 00:00 UTC)."),
    to: str = typer.Option("now", "--to", help="ISO-8601, epoch s/ms/µs or now."),
    gatherers: str | None = typer.Option(
        None, "--gatherers", help="Comma list of gatherers (default: sync_cursors + any that reported a gap)."
    ),
    tickers: str | None = typer.Option(
        None, "--tickers", help="Comma list of markets: also report which days come from history vs live."
    ),
    config: Path = CONFIG_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """List gaps per gatherer and production gaps from sequence_gaps; exit 1 if production has a gap."""
    from kalshictl.cli import output
    from kalshictl.cli.common import load
    from kalshictl.db.connect import connect
    from kalshictl.research import research_db
    from kalshictl.research.coverage import coverage, day_sources
    from kalshictl.research.times import parse_window

    from_us, to_us = parse_window(from_, to)
    names = [g.strip() for g in gatherers.split(",") if g.strip()] if gatherers else None
    with connect(research_db(load(config))) as conn:
        data = coverage(conn, from_us, to_us, gatherers=names)
        markets = [t.strip() for t in (tickers or "").split(",") if t.strip()]
        if markets:
            data["days"] = day_sources(conn, markets, from_us, to_us)
    if as_json:
        output.emit_json(data)
    else:
        output.console.print(output.table(data["gatherers"], title=f"gaps per gatherer {data['from']} .. {data['to']}"))
        if data.get("days"):
            output.console.print(output.table(data["days"], title="days per market: history (no books) or live"))
        if data["gaps"]:
            cols = [
                "gatherer",
                "channel",
                "ticker",
                "markets",
                "reason",
                "recovery",
                "from",
                "to",
                "duration_s",
                "open",
            ]
            output.console.print(output.table(data["gaps"], cols, title="gatherer gaps"))
        if data["production_gaps"]:
            cols = ["channel", "ticker", "from", "to", "duration_s"]
            output.console.print(output.table(data["production_gaps"], cols, title="production gaps"))
        else:
            output.console.print("production: no window where every gatherer had a gap")
    if data["production_gaps"]:
        from kalshictl.errors import KalshiCtlError

        raise KalshiCtlError(f"production has {len(data['production_gaps'])} gap window(s) no gatherer covered")
