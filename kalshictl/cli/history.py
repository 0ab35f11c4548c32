"""``kalshictl history import``: Kalshi's historical markets, trades and candlesticks into production."""

from __future__ import annotations

from pathlib import Path

import typer

from kalshictl.cli.common import CONFIG_OPTION, JSON_OPTION


def _csv(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in (value or "").split(",") if v.strip())


app = typer.Typer(help="History before day one: import Kalshi's past into production (docs/research.md).")


@app.command("import")
def import_cmd(
    from_: str = typer.Option(..., "--from", help="First UTC day, YYYY-MM-DD."),
    to: str = typer.Option(..., "--to", help="Last UTC day (inclusive), YYYY-MM-DD."),
    series: str | None = typer.Option(None, "--series", help="Comma list of series tickers (default: all)."),
    tickers: str | None = typer.Option(None, "--tickers", help="Comma list of market tickers (default: all)."),
    candles: str = typer.Option("60,1440", "--candles", help="Candle periods in minutes: 1,60,1440; '' = none."),
    config: Path = CONFIG_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Import markets (settled ones too), trades and candlesticks of [--from, --to]; resumable, idempotent."""
    import asyncio
    from datetime import UTC, datetime

    from kalshictl.cli import output
    from kalshictl.cli.common import load
    from kalshictl.dedup.history.importer import import_history
    from kalshictl.dedup.history.plan import PERIODS, ImportRange
    from kalshictl.errors import ConfigError

    def day(value: str, option: str) -> int:
        try:
            return int(datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC).timestamp())
        except ValueError:
            raise ConfigError(f"{option}: expected YYYY-MM-DD, got {value!r}") from None

    lo, hi = day(from_, "--from"), day(to, "--to")
    if hi < lo:
        raise ConfigError("--to: before --from")
    try:
        periods = tuple(sorted({int(p) for p in _csv(candles)}))
    except ValueError:
        raise ConfigError(f"--candles: expected a comma list of 1, 60, 1440, got {candles!r}") from None
    if any(p not in PERIODS for p in periods):
        raise ConfigError(f"--candles: periods must be among 1, 60, 1440, got {candles!r}")
    if series and tickers:
        raise ConfigError("--series and --tickers: give one or the other")
    settings = load(config).require("deduplicator")
    rng = ImportRange(lo, hi, _csv(series), _csv(tickers), periods)

    def show(p: dict) -> None:
        eta = "?" if p["eta_s"] is None else f"{p['eta_s']:.0f}s"
        output.err_console.print(
            f"markets {p['markets']}  trades {p['trades']}  candles {p['candles']}  rejected {p['rejected']}  "
            f"units {p['units_done'] + p['units_skipped']}/{p['units_total']}  "
            f"{p['requests_per_s']:.1f} req/s  {p['rows_per_s']:.0f} rows/s  ETA {eta}",
            highlight=False,
        )

    summary = asyncio.run(import_history(settings, rng, on_progress=None if as_json else show, every_s=2.0))
    if as_json:
        output.emit_json(summary)
    else:
        show(summary)
        output.console.print(f"history import done: {summary['units_total']} units, {summary['requests']} requests")
