"""``kalshictl health``: query services' /health and ping databases, once or ``--wait`` until healthy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from kalshictl.cli.common import JSON_OPTION, choose


def health_cmd(
    urls: list[str] = typer.Argument(None, help="Service addresses or /health URLs (host:port is enough)."),
    config: Path | None = typer.Option(
        None,
        "--config",
        "-c",
        help="Take URLs from the config (deduplicator.gatherers[].health_url, gatherer.http).",
    ),
    check_db: list[str] = typer.Option(
        [],
        "--check-db",
        help="Ping a database: a DSN (no password) or, with --config, production|gatherer|<gatherer name>[:admin].",
    ),
    password_env: str | None = typer.Option(
        None, "--password-env", help="Environment variable holding the --check-db password (else from --config)."
    ),
    sslrootcert: str | None = typer.Option(
        None, "--sslrootcert", help="CA bundle verifying a --check-db DSN's server (verify-full), or 'system'."
    ),
    allow_insecure: bool = typer.Option(
        False, "--allow-insecure", help="Permit a --check-db sslmode that does not verify the server (tests)."
    ),
    db_thresholds: str | None = typer.Option(
        None, "--db-thresholds", help="gatherer (<100 ms) or production (<50 ms healthy); default production."
    ),
    wait: float | None = typer.Option(None, "--wait", help="Retry until the requirement holds, up to SECONDS."),
    interval: float = typer.Option(2.0, "--interval", help="Seconds between attempts with --wait."),
    require: str = typer.Option("healthy", "--require", help="healthy, or degraded (= degraded or better)."),
    any_: bool = typer.Option(False, "--any", help="One target meeting the requirement is enough."),
    timeout: float = typer.Option(5.0, "--timeout", help="Per-request timeout in seconds."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Query services' /health and ping databases, once or --wait until the requirement holds.

    Exit 0 when the requirement holds, 3 when not, 4 when a database is unreachable or refuses us, 6 when --wait
    times out.
    """
    from kalshictl.cli import output
    from kalshictl.errors import ConfigError
    from kalshictl.ops import health_check as hc

    settings = None
    if config is not None:
        from kalshictl.cli.common import load

        settings = load(config)
    thresholds = None if db_thresholds is None else choose("--db-thresholds", db_thresholds, hc.THRESHOLDS)
    targets = hc.Targets(urls=[hc.health_url(u) for u in urls or []])
    for dsn in check_db:
        db = hc.db_from_dsn(
            dsn,
            password_env=password_env,
            settings=settings,
            sslrootcert=sslrootcert,
            allow_insecure=allow_insecure,
        )
        if thresholds:
            db.thresholds = thresholds
        targets.dbs.append(db)
    if settings is not None and not targets:
        targets.urls = hc.urls_from_config(settings)
    if wait is not None and wait <= 0:
        raise ConfigError("--wait: expected a positive number of seconds")

    required = choose("--require", require, hc.REQUIRES)

    def progress(attempt: int, results: list[dict[str, Any]]) -> None:
        if wait is not None and not as_json and not hc.holds(results, required, any_):
            bad = ", ".join(f"{r['target']}={r['status']}" for r in results)
            output.info(f"waiting (attempt {attempt}): {bad}")

    summary = hc.check(
        targets,
        require=required,
        any_=any_,
        wait_s=wait,
        interval_s=interval,
        timeout_s=timeout,
        on_attempt=progress,
    )
    if as_json:
        output.emit_json(summary)
    else:
        rows = [
            {
                "target": r["target"],
                "kind": r["kind"],
                "status": output.styled_status(r["status"]),
                "http": r.get("http_code"),
                "latency_ms": r.get("latency_ms"),
                "detail": r.get("detail"),
            }
            for r in summary["results"]
        ]
        output.console.print(output.table(rows, ["target", "kind", "status", "http", "latency_ms", "detail"]))
    hc.raise_for(summary, wait)
