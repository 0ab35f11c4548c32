"""The command tree: --help is fast and lists every group; exit codes propagate from typer.Exit and errors."""

import subprocess
import sys
import time

import typer

from kalshictl.cli import app as app_module


def _run(*args):
    return subprocess.run([sys.executable, "-m", "kalshictl", *args], capture_output=True, text=True)


def test_help_lists_every_command_and_is_fast():
    start = time.monotonic()
    proc = _run("--help")
    elapsed = time.monotonic() - start
    assert proc.returncode == 0
    for name in (
        "gather",
        "dedup",
        "migrate",
        "init-db",
        "health",
        "rotate-password",
        "preflight",
        "sim",
        "export",
        "book",
        "coverage",
        "demo",
    ):
        assert name in proc.stdout, name
    # heavy libraries are imported inside commands, not at start-up
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, kalshictl.cli.app; "
            "print(','.join(m for m in ('psycopg','pyarrow','boto3','aiohttp','websockets') if m in sys.modules))",
        ],
        capture_output=True,
        text=True,
    )
    assert probe.stdout.strip() == "", probe.stdout
    assert elapsed < 10


def test_typer_exit_code_propagates(monkeypatch):
    probe = typer.Typer()

    @probe.command()
    def fail() -> None:
        raise typer.Exit(3)

    monkeypatch.setattr(app_module, "app", probe)
    monkeypatch.setattr(sys, "argv", ["kalshictl"])
    try:
        app_module.main()
    except SystemExit as exc:
        assert exc.code == 3
    else:
        raise AssertionError("main() did not exit")


def test_unknown_command_is_usage_error():
    proc = _run("no-such-command")
    assert proc.returncode == 2
