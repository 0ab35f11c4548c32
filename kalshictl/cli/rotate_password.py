"""``kalshictl rotate-password``: password rotation and rollback, the password never leaking.

The procedure and its recovery: docs/runbooks/password-rotation.md.
"""

from __future__ import annotations

from pathlib import Path

import typer

from kalshictl.cli.common import JSON_OPTION


def rotate_password_cmd(
    user: str = typer.Option(..., "--user", "-u", help="Role to rotate, e.g. deduplicator."),
    secret: str | None = typer.Option(
        None, "--secret", help="Secret id (aws), store path (file), or aws-sm:/file: ref (default: roles.<user>)."
    ),
    store: str | None = typer.Option(None, "--store", help="aws or file (default: from --secret's prefix, else aws)."),
    config: Path | None = typer.Option(None, "--config", "-c", help="Config with the role's database and admin_dsn."),
    admin_dsn: str | None = typer.Option(None, "--admin-dsn", help="Admin DSN (no password) instead of --config."),
    admin_password_env: str | None = typer.Option(
        None, "--admin-password-env", help="Environment variable holding the admin password."
    ),
    sslrootcert: str | None = typer.Option(
        None, "--sslrootcert", help="CA bundle verifying the --admin-dsn server (verify-full), or 'system'."
    ),
    allow_insecure: bool = typer.Option(
        False, "--allow-insecure", help="Permit an --admin-dsn sslmode that does not verify the server (tests)."
    ),
    restart: list[str] = typer.Option([], "--restart", help="Restart command, run in order (no shell). Repeat."),
    restart_timeout: float = typer.Option(300.0, "--restart-timeout", help="Seconds per restart command."),
    do_rollback: bool = typer.Option(False, "--rollback", help="Restore the previous version (store + database)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Generate a new password, set its SCRAM verifier, update the store, restart, verify (or --rollback)."""
    import shlex

    from kalshictl.cli import output
    from kalshictl.errors import ConfigError
    from kalshictl.ops import rotation as rot

    if config is not None and admin_dsn is None:
        from kalshictl.cli.common import load

        admin, login, ref = rot.target_from_config(load(config), user)
        secret = secret or ref
    elif admin_dsn is not None and config is None:
        admin, login = rot.target_from_dsn(
            admin_dsn, admin_password_env, user, sslrootcert=sslrootcert, allow_insecure=allow_insecure
        )
    else:
        raise ConfigError("give exactly one of --config or --admin-dsn")
    if not secret:
        raise ConfigError(f"--secret is required (or set roles.{user} in the config)")
    base = ["kalshictl", "rotate-password", "--user", user, "--secret", secret]
    base += ["--store", store] if store else []
    base += ["--config", str(config)] if config else ["--admin-dsn", admin_dsn or ""]
    base += ["--admin-password-env", admin_password_env] if admin_password_env else []
    base += ["--sslrootcert", sslrootcert] if sslrootcert and not config else []
    base += ["--allow-insecure"] if allow_insecure and not config else []
    target = rot.RotationTarget(
        user=user,
        store=rot.open_store(secret, store),
        admin=admin,
        login=login,
        restarts=list(restart),
        restart_timeout_s=restart_timeout,
        scrub_env=(admin_password_env,) if admin_password_env else (),
        command=" ".join(shlex.quote(a) for a in base),
    )
    steps: list[dict] = []

    def step(name: str, status: str, detail: str) -> None:
        steps.append({"step": name, "status": status, "detail": detail})
        if not as_json:
            output.info(f"{name}: {status} ({detail})")

    result = (rot.rollback if do_rollback else rot.rotate)(target, step)
    result["steps"] = steps
    if as_json:
        output.emit_json(result)
        return
    output.console.print(
        output.table(steps, ["step", "status", "detail"], title=f"{result['action']} {user} ({result['secret']})")
    )
