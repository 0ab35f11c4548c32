"""``kalshictl sim``: run the local Kalshi exchange until SIGINT/SIGTERM."""

from __future__ import annotations

from pathlib import Path

import typer


def sim_cmd(
    markets: int = typer.Option(1000, "--markets", min=1, help="Number of markets at start."),
    seed: int = typer.Option(0, "--seed", help="Seed of markets and activity (same seed, same run)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind."),
    port: int = typer.Option(8765, "--port", min=0, max=65535, help="Port to bind (0 = any free port)."),
    rate: float = typer.Option(100.0, "--rate", min=0, help="Exchange events per second (deltas, trades...)."),
    faults: str = typer.Option("", "--faults", help="Fault spec, e.g. drop=0.001,skip_seq=0.002 (docs/sim.md)."),
    ground_truth: Path | None = typer.Option(None, "--ground-truth", help="Write the ground-truth JSONL here."),
    public_key: Path | None = typer.Option(None, "--public-key", help="PEM public key: require signed requests."),
    rest_tier: str = typer.Option("basic", "--rest-tier", help="basic|advanced|...|prestige|unlimited."),
    heartbeat: float = typer.Option(10.0, "--heartbeat", min=0.01, help="Seconds between WS heartbeat pings."),
    max_markets_per_sub: int = typer.Option(
        10_000, "--max-markets-per-sub", min=1, help="Per-subscription market cap (error 26 beyond)."
    ),
    paused: bool = typer.Option(False, "--paused", help="Start with activity paused (POST /_sim/resume)."),
    ack_seq: str = typer.Option("own", "--ack-seq", help="own|last: ok/unsubscribed acks take a seq or not."),
    snapshot_seq: str = typer.Option("consume", "--snapshot-seq", help="consume|none: get_snapshot takes a seq."),
    repeat_subscribe: str = typer.Option("merge", "--repeat-subscribe", help="merge|new_sid: repeat subscribe."),
    delta_ts_ms: str = typer.Option("always", "--delta-ts-ms", help="always|sometimes: deltas carry ts_ms."),
    mve_listing: str = typer.Option(
        "include", "--mve-listing", help="include|exclude: KXMVE markets in GET /markets without mve_filter."
    ),
    mve_share: float = typer.Option(0.1, "--mve-share", min=0, max=1, help="Share of multivariate series."),
    history_days: int = typer.Option(
        0, "--history-days", min=0, help="Days of settled past markets and trades (/historical/..., candles)."
    ),
    create_share: float = typer.Option(
        0.004, "--create-share", min=0, max=1, help="Share of actions that list a new event (0 = a fixed set)."
    ),
) -> None:
    """Serve Kalshi's REST + WebSocket protocol with seeded activity, fault injection and a ground-truth log."""
    import asyncio
    import signal

    from kalshictl.errors import ConfigError
    from kalshictl.sim import SimConfig, SimExchange
    from kalshictl.sim.config import check_option
    from kalshictl.sim.faults import FaultSpec
    from kalshictl.sim.ratelimit import TIER_NAMES

    try:
        FaultSpec.parse(faults)
    except ValueError as exc:
        raise ConfigError(f"--faults: {exc}") from None
    if rest_tier.lower() not in TIER_NAMES:
        raise ConfigError(f"--rest-tier: expected one of {', '.join(TIER_NAMES)}, got {rest_tier!r}")
    options = {
        "ack_seq": ack_seq,
        "snapshot_seq": snapshot_seq,
        "repeat_subscribe": repeat_subscribe,
        "delta_ts_ms": delta_ts_ms,
        "mve_listing": mve_listing,
    }
    for name, value in options.items():
        try:
            check_option(name, value)
        except ValueError as exc:
            raise ConfigError(f"--{name.replace('_', '-')}: {exc}") from None
    if public_key is not None and not public_key.is_file():
        raise ConfigError(f"--public-key: no such file: {public_key}")
    cfg = SimConfig(
        markets=markets,
        seed=seed,
        host=host,
        port=port,
        rate=rate,
        faults=faults,
        ground_truth=ground_truth,
        record_ground_truth=ground_truth is not None,
        public_key=public_key,
        rest_tier=rest_tier.lower(),
        heartbeat_s=heartbeat,
        max_markets_per_sub=max_markets_per_sub,
        create_share=create_share,
        paused=paused,
        mve_share=mve_share,
        history_days=history_days,
        ack_seq=ack_seq,
        snapshot_seq=snapshot_seq,
        repeat_subscribe=repeat_subscribe,
        delta_ts_ms=delta_ts_ms,
        mve_listing=mve_listing,
    )

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            ex = SimExchange(cfg)
            await ex.start()
        except OSError as exc:
            raise ConfigError(f"cannot bind {host}:{port}: {exc.strerror or exc}") from None
        typer.echo(f"kalshictl sim: {ex.universe.n_markets} markets, seed {seed}, {rate:g} events/s")
        typer.echo(f"REST {ex.rest_url}")
        typer.echo(f"WS {ex.ws_url}")
        typer.echo(f"CONTROL {ex.control_url}")
        if ex.ground_truth_path is not None:
            typer.echo(f"GROUND_TRUTH {ex.ground_truth_path}")
        import sys

        sys.stdout.flush()
        try:
            await stop.wait()
        finally:
            await ex.stop()
        typer.echo(f"kalshictl sim: stopped after {ex.gt.records} events")

    asyncio.run(serve())
