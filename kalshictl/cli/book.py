"""``kalshictl book``: point-in-time order books rebuilt from production and the cold tier, and ``book verify``.

``book show TICKER --at TIME`` rebuilds a book; ``book TICKER --at TIME`` is the same command (a first argument that
is not a subcommand name is treated as ``show``'s ticker). ``book verify TICKER --from T --to T`` replays a window
against every REST snapshot in it and exits 1 on a mismatch.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from typer.core import TyperGroup

from kalshictl.cli.common import CONFIG_OPTION, JSON_OPTION

if TYPE_CHECKING:
    from rich.table import Table

TIME_HELP = "ISO-8601 (naive = UTC), epoch s/ms/µs, or now."


class _DefaultShowGroup(TyperGroup):
    """``book TICKER ...`` means ``book show TICKER ...``."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            args = ["show", *args]
        return super().parse_args(ctx, args)


def _levels_table(title: str, bids: list[list[int]], asks: list[list[int]]) -> Table:
    from rich.table import Table

    from kalshictl.units import format_price, format_size

    out = Table(title=title)
    for col in ("bid size", "bid", "ask", "ask size"):
        out.add_column(col, justify="right")
    bids_best_first = list(reversed(bids))
    for i in range(max(len(bids), len(asks))):
        b = bids_best_first[i] if i < len(bids) else None
        a = asks[i] if i < len(asks) else None
        out.add_row(
            format_size(b[1]) if b else "",
            format_price(b[0]) if b else "",
            format_price(a[0]) if a else "",
            format_size(a[1]) if a else "",
        )
    return out


app = typer.Typer(
    cls=_DefaultShowGroup,
    help="Point-in-time order books rebuilt from production (`book TICKER --at T` = `book show TICKER --at T`).",
    no_args_is_help=True,
)


@app.command("show")
def show_cmd(
    ticker: str = typer.Argument(..., help="Market ticker."),
    at: str = typer.Option("now", "--at", help=TIME_HELP),
    depth: int = typer.Option(10, "--depth", min=0, help="Levels per side (0 = all)."),
    config: Path = CONFIG_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Rebuild TICKER's book at --at from the nearest earlier snapshot plus the deltas after it."""
    from kalshictl.cli import output
    from kalshictl.cli.common import load
    from kalshictl.db.connect import connect
    from kalshictl.research import research_db
    from kalshictl.research.book_query import book_at
    from kalshictl.research.cold import cold_reader
    from kalshictl.research.times import iso, parse_instant
    from kalshictl.units import format_price

    at_us = parse_instant(at, what="--at")
    settings = load(config)
    with connect(research_db(settings)) as conn:
        res = book_at(conn, ticker, at_us, cold=cold_reader(conn, settings))
    data = {
        "ticker": ticker,
        "at": at_us,
        "at_time": iso(at_us),
        "units": {"price": "1e-4 USD", "size": "1e-2 contracts", "time": "µs since epoch"},
        "base": res.base.describe(),
        "deltas_applied": res.deltas_applied,
        "last_delta_ts": res.last_delta_ts,
        **res.book.as_dict(depth),
        "negative_levels": res.book.negative_levels(),
    }
    if as_json:
        output.emit_json(data)
        return

    def px(v: int | None) -> str:
        return format_price(v) if v is not None else "-"

    b = data["base"]
    output.console.print(
        f"[bold]{ticker}[/bold] at {data['at_time']}  (base: {b['source']} snapshot of {b['gatherer']} at "
        f"{b['snapshot_time']}, +{res.deltas_applied} deltas)"
    )
    output.console.print(
        f"best YES bid {px(data['best_yes_bid'])}  best YES ask {px(data['best_yes_ask'])}  spread {px(data['spread'])}"
    )
    output.console.print(_levels_table("YES view", data["yes_bids"], data["yes_asks"]))
    output.console.print(_levels_table("NO view", data["no_bids"], data["no_asks"]))
    if data["negative_levels"]:
        output.error(f"negative levels (missing data before this time): {data['negative_levels'][:5]}")


@app.command("verify")
def verify_cmd(
    ticker: str = typer.Argument(..., help="Market ticker."),
    from_: str = typer.Option(..., "--from", help=TIME_HELP),
    to: str = typer.Option(..., "--to", help=TIME_HELP),
    tolerance_ms: float = typer.Option(250.0, "--tolerance-ms", min=0, help="Match window around a REST snapshot."),
    include_ws: bool = typer.Option(False, "--include-ws", help="Also compare WS snapshots in the window."),
    config: Path = CONFIG_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Replay [--from, --to] and compare every REST snapshot with the rebuilt book; exit 1 on mismatches."""
    from kalshictl.cli import output
    from kalshictl.cli.common import load
    from kalshictl.db.connect import connect
    from kalshictl.research import research_db
    from kalshictl.research.cold import cold_reader
    from kalshictl.research.times import parse_window
    from kalshictl.research.verify import verify

    from_us, to_us = parse_window(from_, to)
    sources = ("rest", "ws") if include_ws else ("rest",)
    settings = load(config)
    with connect(research_db(settings)) as conn:
        cold = cold_reader(conn, settings)
        tolerance = int(tolerance_ms * 1000)
        report = verify(conn, ticker, from_us, to_us, tolerance_us=tolerance, sources=sources, cold=cold)
    data = report.as_dict()
    if as_json:
        output.emit_json(data)
    else:
        output.console.print(
            f"{ticker} {data['from']} .. {data['to']}: {report.checked} snapshot(s) checked, {report.matched} "
            f"matched, {len(report.mismatches)} mismatched, {report.deltas_applied} deltas replayed"
        )
        rows = [
            {
                "snapshot": m["snapshot_time"],
                "gatherer": m["gatherer"],
                "window": m["window"],
                "side": d["side"],
                "price": d["price"],
                "expected": d["expected"],
                "rebuilt": d["rebuilt"],
            }
            for m in data["mismatches"]
            for d in m["diffs"]
        ]
        if rows:
            output.console.print(output.table(rows, title="mismatches (sizes in 1e-2 contracts)"))
        if report.checked == 0:
            output.info("no REST snapshots in the window: nothing verified")
    if not report.ok:
        from kalshictl.errors import KalshiCtlError

        raise KalshiCtlError(f"{ticker}: {len(report.mismatches)} REST snapshot(s) disagree with the rebuilt book")
