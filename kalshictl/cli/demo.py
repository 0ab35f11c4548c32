"""``kalshictl demo``: the whole pipeline on this machine with no configuration, with a live view."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from rich.console import Group

    from kalshictl.local.demo import Demo, DemoState


def demo_cmd(
    markets: int = typer.Option(300, help="Markets on the local exchange."),
    duration: float = typer.Option(60.0, help="Seconds to run before stopping (Ctrl-C stops early)."),
    rate: float = typer.Option(300.0, help="Exchange messages per second."),
    seed: int = typer.Option(7, help="Seed of the exchange's activity."),
    faults: str | None = typer.Option(None, help="Fault spec for the exchange, e.g. drop=0.001,skip_seq=0.002"),
    workdir: Path | None = typer.Option(None, help="Keep clusters, configs and logs here (default: a temp dir)."),
    keep: bool = typer.Option(False, "--keep", help="Do not delete the working directory at the end."),
    as_json: bool = typer.Option(False, "--json", help="Print the final summary as JSON (no live view)."),
) -> None:
    """Local exchange + embedded PostgreSQL + 3 gatherers + deduplicator, live status, then a summary."""
    import time

    from rich.live import Live

    from kalshictl.cli import output
    from kalshictl.local.demo import Demo, DemoOptions

    demo = Demo(
        DemoOptions(
            markets=markets,
            seed=seed,
            rate=rate,
            faults=faults,
            workdir=workdir,
            keep=keep or workdir is not None,
        )
    )
    demo.check_every_book = True
    try:
        with output.err_console.status("starting embedded PostgreSQL, creating roles and schemas…"):
            demo.setup()
        with output.err_console.status("starting the local exchange, 3 gatherers and the deduplicator…"):
            demo.start()
        deadline = time.monotonic() + duration
        if as_json:
            while time.monotonic() < deadline:
                time.sleep(1.0)
        else:
            with Live(_dashboard(demo.sample(), duration), console=output.console, refresh_per_second=2) as live:
                try:
                    while time.monotonic() < deadline:
                        time.sleep(1.0)
                        live.update(_dashboard(demo.sample(), duration))
                except KeyboardInterrupt:
                    output.info("stopping early (Ctrl-C)…")
        with output.err_console.status("stopping: gatherers flush, the deduplicator drains…"):
            codes = demo.stop()
        summary = demo.summary(codes)
        if as_json:
            output.emit_json(summary)
        else:
            _print_summary(summary, demo)
    finally:
        demo.close()
    if summary["differences"]:
        raise typer.Exit(1)  # the verdict is not "all match"


def _dashboard(state: DemoState, duration: float) -> Group:
    from rich.console import Group
    from rich.table import Table

    from kalshictl.cli.output import styled_status

    services = Table(title=f"kalshictl demo — {state.elapsed_s:,.0f}s of {duration:,.0f}s", expand=False)
    for col in ("service", "status", "pid", "markets", "ws", "per s"):
        services.add_column(col)
    services.caption = "per s: events the exchange emits / messages each gatherer receives"
    ex = state.exchange
    services.add_row(
        "exchange (sim)",
        styled_status("healthy" if ex else "down"),
        "-",
        _num(ex.get("markets")),
        f"{ex.get('connections', '-')} clients",
        _num(ex.get("rate")),
    )
    for svc in state.services:
        services.add_row(
            svc["service"],
            styled_status(str(svc["status"])),
            str(svc["pid"] or "-"),
            _num(svc["markets"]),
            str(svc["ws"]),
            _num(svc["msgs/s"]),
        )
    prod = Table(title="production (deduplicated)")
    prod.add_column("table")
    prod.add_column("rows", justify="right")
    for table, rows in state.production.items():
        prod.add_row(table, f"{rows:,}")
    lag = "-" if state.max_lag_s is None else f"{state.max_lag_s:.2f}s"
    prod.caption = f"max sync lag {lag}"
    return Group(services, prod)


def _num(value: object) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if isinstance(value, int | float) else str(value)


def _print_summary(summary: dict[str, Any], demo: Demo) -> None:
    """The busiest market's book, the market counts explained, exit codes; then the table and the verdict line."""
    from kalshictl.cli import output
    from kalshictl.local.demo import explain_market_counts

    output.console.print()
    book = summary.get("book")
    if book:
        _print_book(book, summary["workdir"], demo)
    output.console.print(explain_market_counts(summary["markets"]), highlight=False)
    codes = ", ".join(f"{name} {code}" for name, code in summary["exit_codes"].items())
    output.console.print(f"service exit codes: {codes}", highlight=False)
    if summary["workdir"]:
        output.console.print(f"kept: {summary['workdir']} (configs, logs, ground truth)")

    def mark(match: bool | None) -> str:
        return {True: "[green]yes[/green]", False: "[red]NO[/red]", None: "n/a (REST polls)"}[match]

    rows = [
        {
            "what": row["table"],
            "exchange": row["exchange_emitted"],
            "production": row["production_rows"],
            "match": mark(row["match"]),
        }
        for row in summary["tables"]
    ]
    books = summary.get("books")
    if books:
        equal = books["checked"] - len(books["mismatched"])
        rows.append(
            {
                "what": "order books rebuilt",
                "exchange": books["checked"],
                "production": equal,
                "match": mark(not books["mismatched"]),
            }
        )
    output.console.print(
        output.table(
            rows,
            ["what", "exchange", "production", "match"],
            title="exchange vs production (events emitted / rows stored; books compared / equal)",
        )
    )
    style = "bold green" if not summary["differences"] else "bold red"
    output.console.print(f"[{style}]verdict: {summary['verdict']}[/{style}]")


def _print_book(book: dict[str, Any], workdir: str | None, demo: Demo) -> None:
    from kalshictl.cli import output
    from kalshictl.units import format_price, format_size

    verdict = "[green]equals[/green]" if book["matches_exchange"] else "[red]DIFFERS FROM[/red]"
    output.console.print(
        f"order book of the busiest market [bold]{book['ticker']}[/bold], rebuilt from production "
        f"(snapshot + {book['deltas_applied']} deltas), {verdict} the exchange's own book"
    )

    def px(v: int | None) -> str:
        return "-" if v is None else format_price(v)

    output.console.print(
        f"best YES bid {px(book['best_yes_bid'])}  best YES ask {px(book['best_yes_ask'])}  spread {px(book['spread'])}"
    )
    rows = [{"yes bid": format_price(p), "size": format_size(q)} for p, q in reversed(book["yes_bids"][-5:])]
    output.console.print(output.table(rows, ["yes bid", "size"], title="top YES bids"))
    if workdir:
        cluster = demo.pipeline.production_cluster
        prefix = f"runuser -u {cluster.os_user} -- " if cluster.os_user else ""
        output.console.print(
            "query it yourself:\n"
            f"  {prefix}{cluster.bindir}/pg_ctl -D {cluster.data_dir} -l {cluster.log_file} start\n"
            f"  kalshictl book {book['ticker']} --at now --config {workdir}/deduplicator.yaml",
            markup=False,
        )
