"""``kalshictl preflight``: the deployment checklist's items a program can check, as a pass/fail table.

The checklist: docs/runbooks/deployment.md.
"""

from __future__ import annotations

from pathlib import Path

import typer

from kalshictl.cli.common import CONFIG_OPTION, JSON_OPTION


def preflight_cmd(
    config: Path = CONFIG_OPTION,
    health: bool = typer.Option(True, "--health/--no-health", help="Also probe the configured /health URLs."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Config valid, secrets resolvable, databases reachable (TLS), migrations current, grants; exit 0 or 1."""
    from kalshictl.cli import output
    from kalshictl.errors import KalshiCtlError
    from kalshictl.ops.preflight import run

    result = run(config, check_health=health)
    if as_json:
        output.emit_json(result)
    else:
        rows = [{**r, "result": output.styled_status("pass" if r["ok"] else "fail")} for r in result["checks"]]
        output.console.print(output.table(rows, ["check", "target", "result", "detail"], title="preflight"))
    if not result["ok"]:
        failed = sum(not r["ok"] for r in result["checks"])
        raise KalshiCtlError(f"preflight: {failed} check(s) failed")
