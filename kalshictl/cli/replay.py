"""``kalshictl replay``: serve a recorded period of production as Kalshi's WebSocket and REST (docs/replay.md)."""

from __future__ import annotations

from pathlib import Path

import typer

from kalshictl.cli.common import CONFIG_OPTION

TIME_HELP = "ISO-8601 (naive = UTC), epoch s/ms/µs, or now (as `book --at` takes them)."


def parse_speed(text: str) -> float | None:
    """``max`` -> None (as fast as clients read); ``1``, ``10``, ``0.5`` -> that multiple of exchange time."""
    from kalshictl.errors import ConfigError

    if text.strip().lower() == "max":
        return None
    try:
        speed = float(text)
    except ValueError:
        raise ConfigError(f"--speed: expected a positive number or max, got {text!r}") from None
    if not speed > 0 or speed == float("inf"):
        raise ConfigError(f"--speed: expected a positive number or max, got {text!r}")
    return speed


def _split(values: list[str]) -> list[str]:
    return [v for raw in values for v in raw.split(",") if v]


def replay_cmd(
    from_: str = typer.Option(..., "--from", help=TIME_HELP),
    to: str = typer.Option(..., "--to", help=TIME_HELP),
    speed: str = typer.Option("1", "--speed", help="1 = exchange time, N = N times faster, max = as fast as read."),
    tickers: list[str] = typer.Option([], "--tickers", help="Markets to serve (repeat or comma-separate)."),
    series: list[str] = typer.Option([], "--series", help="Series whose markets to serve."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind."),
    port: int = typer.Option(8770, "--port", min=0, max=65535, help="Port to bind (0 = any free port)."),
    wait_clients: int = typer.Option(
        1,
        "--wait-clients",
        min=0,
        help="The clock starts once this many connections have subscribed (0 = on POST /replay/start).",
    ),
    buffer_mb: int = typer.Option(
        64, "--buffer-mb", min=1, help="Per-connection send queue; beyond it the client is disconnected."
    ),
    shift_to_now: bool = typer.Option(
        False, "--shift-to-now", help="Move message times so --from is when the clock starts (feeding a pipeline)."
    ),
    config: Path = CONFIG_OPTION,
) -> None:
    """Serve [--from, --to] of production as Kalshi's WebSocket and REST, paced by exchange time."""
    import asyncio
    import signal
    import sys

    from kalshictl.cli.common import load
    from kalshictl.errors import ConfigError
    from kalshictl.replay.server import ReplayOptions, ReplayServer
    from kalshictl.research import research_db
    from kalshictl.research.times import iso, parse_window

    from_us, to_us = parse_window(from_, to)
    opts = ReplayOptions(
        from_us=from_us,
        to_us=to_us,
        speed=parse_speed(speed),
        tickers=_split(tickers),
        series=_split(series),
        host=host,
        port=port,
        wait_clients=wait_clients,
        buffer_bytes=buffer_mb * 1024 * 1024,
        shift_to_now=shift_to_now,
    )
    settings = load(config)
    db = research_db(settings)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        server = ReplayServer(db, opts, settings=settings)
        try:
            await server.start()
        except OSError as exc:  # (start has closed what it opened)
            raise ConfigError(f"cannot bind {host}:{port}: {exc.strerror or exc}") from None
        typer.echo(f"kalshictl replay: {iso(from_us)} .. {iso(to_us)} at speed {speed}")
        typer.echo(f"REST {server.rest_url}")
        typer.echo(f"WS {server.ws_url}")
        typer.echo(f"GAPS {server.base_url}/replay/gaps ({len(server.gaps)} unrecorded window(s))")
        sys.stdout.flush()
        done = asyncio.ensure_future(server.done())
        halt = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({done, halt}, return_when=asyncio.FIRST_COMPLETED)
            if done.done():
                await asyncio.sleep(1.0)  # let the writers drain and close
        finally:
            halt.cancel()
            done.cancel()
            await server.stop()
        s = server.session
        typer.echo(f"kalshictl replay: {s.events} events, {server.feed.sent} frames sent")

    asyncio.run(serve())
