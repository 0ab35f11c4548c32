"""The command tree: --help is fast and lists every group; exit codes propagate from typer.Exit and errors."""

import re
import subprocess
import sys
import time

import pytest
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
        "cold",
        "book",
        "coverage",
        "demo",
        "replay",
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


def _command_paths(command, path=()):
    yield path
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from _command_paths(sub, (*path, name))


def test_help_shows_no_value_for_flags():
    """Every --help of the tree: a flag (``--json``, ``--keep``, ``--help``) shows no ``<bool>`` placeholder as if it
    took a value; options that take one still name its type."""
    from typer.main import get_command
    from typer.testing import CliRunner

    runner = CliRunner()
    paths = list(_command_paths(get_command(app_module.app)))
    assert len(paths) > 15
    for path in paths:
        result = runner.invoke(app_module.app, [*path, "--help"], env={"COLUMNS": "200"}, terminal_width=200)
        assert result.exit_code == 0, (path, result.output)
        assert "--help" in result.output, path
        assert "<bool>" not in result.output and "BOOLEAN" not in result.output, (path, result.output)
    demo = runner.invoke(app_module.app, ["demo", "--help"], env={"COLUMNS": "200"}, terminal_width=200).output
    assert re.search(r"--markets\s+<int>", demo) and re.search(r"--keep\s+Do not delete", demo), demo


def test_demo_verdict_names_what_differs():
    from kalshictl.local.demo import differences, explain_market_counts

    tables = [
        {"table": "trades", "exchange_emitted": 10, "production_rows": 10, "match": True},
        {"table": "tickers", "exchange_emitted": 12, "production_rows": 9, "match": False},
        {"table": "orderbook_snapshots", "exchange_emitted": None, "production_rows": 40, "match": None},
    ]
    book = {"ticker": "KXA-E1-T0", "matches_exchange": True}
    ok = {"tables": tables[:1] + tables[2:], "book": book, "books": {"checked": 3, "mismatched": []},
          "exit_codes": {"gatherer-1": 0, "exchange": 0}}  # fmt: skip
    assert differences(ok) == []
    bad = {**ok, "tables": tables, "books": {"checked": 3, "mismatched": [{"ticker": "X"}]},
           "exit_codes": {"gatherer-1": 1, "exchange": 0}}  # fmt: skip
    assert differences(bad) == [
        "tickers: 3 missing from production (9 of 12)",
        "1 of 3 rebuilt books differ from the exchange's",
        "exit codes gatherer-1=1",
    ]
    text = explain_market_counts(
        {
            "exchange_listed": 386,
            "gatherers_subscribed": {"g1": 351, "g2": 351},
            "subscribed_statuses": ["open"],
            "books_checked": 294,
        }
    )
    assert "lists 386" in text and "subscribes to 351" in text and "294 books checked" in text


def test_optional_dependencies_fail_naming_their_extra(monkeypatch):
    """pyarrow and boto3 are extras: without them, export and aws-sm fail with the extra to install."""
    from kalshictl.errors import MissingExtra
    from kalshictl.research.export import arrow_schema
    from kalshictl.secrets.aws import AwsSecretStore

    monkeypatch.setitem(sys.modules, "pyarrow", None)  # None in sys.modules: `import pyarrow` raises, as if absent
    monkeypatch.setitem(sys.modules, "boto3", None)
    with pytest.raises(MissingExtra, match="pyarrow is not installed; it comes with the 'export' extra") as err:
        arrow_schema("trades", [], by_series=False)
    assert err.value.hint == "pip install 'kalshictl[export]'"
    with pytest.raises(MissingExtra, match="boto3 is not installed; it comes with the 'aws' extra"):
        AwsSecretStore()


def test_services_run_without_the_extras():
    """A gatherer or deduplicator host installs kalshictl without extras: nothing it runs imports pyarrow or boto3."""
    blocked = ("pyarrow", "boto3", "botocore")
    code = (
        f"import sys; sys.modules.update(dict.fromkeys({blocked!r}))\n"
        "import kalshictl.gatherer.service, kalshictl.dedup.service, kalshictl.secrets, kalshictl.config\n"
        "import kalshictl.cli.app\n"
        "print('ok')"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def _leaves(command, path=()):
    subs = getattr(command, "commands", None)
    if subs:
        for name, sub in subs.items():
            yield from _leaves(sub, (*path, name))
    else:
        yield path, command


def test_command_modules_define_their_commands_at_module_level():
    """Every group is a module's ``app`` and every single command a module-level function of kalshictl/cli, and
    cli/app.py composes every command module (none is left out of the tree)."""
    import importlib
    import pkgutil

    import kalshictl.cli

    root = app_module.app
    groups = {info.name: info.typer_instance for info in root.registered_groups}
    commands = {info.name: info.callback for info in root.registered_commands}
    homes = set()
    for name, group in groups.items():
        home = importlib.import_module(group.registered_commands[0].callback.__module__)
        assert getattr(home, "app", None) is group, name
        homes.add(home.__name__)
        for info in group.registered_commands:
            assert getattr(home, info.callback.__name__) is info.callback, (name, info.name)
    for name, callback in commands.items():
        home = importlib.import_module(callback.__module__)
        assert callback.__qualname__ == callback.__name__ and getattr(home, callback.__name__) is callback, name
        homes.add(home.__name__)
    helpers = {"kalshictl.cli.app", "kalshictl.cli.common", "kalshictl.cli.output"}
    modules = {f"kalshictl.cli.{m.name}" for m in pkgutil.iter_modules(kalshictl.cli.__path__)}
    assert homes == modules - helpers
    assert len(groups) + len(commands) == 16


def _usage_lines(text):
    """docs/cli.md's usage lines: each ``kalshictl ...`` line of a code block with its indented continuation lines
    (``[show]``, an optional subcommand, counts as the subcommand)."""
    out: list[str] = []
    for block in re.findall(r"^```\w*\n(.*?)^```$", text, re.M | re.S):
        for line in block.splitlines():
            if line.startswith("kalshictl "):
                out.append(re.sub(r"\[(\w[\w-]*)\]", r"\1", line))
            elif out and line[:1].isspace() and line.strip():
                out[-1] += "\n" + line
    return out


def test_docs_cli_names_every_command_and_option():
    """docs/cli.md is the reference: every command has a usage line there naming each of its long options (either
    spelling of an on/off pair)."""
    from pathlib import Path

    from typer.main import get_command

    lines = _usage_lines((Path(__file__).parents[2] / "docs" / "cli.md").read_text())
    undocumented = []
    for path, command in _leaves(get_command(app_module.app)):
        usage = [u for u in lines if tuple(u.split()[1 : 1 + len(path)]) == path]
        if not usage:
            undocumented.append(" ".join(path))
        for param in command.params:
            spellings = [o for o in (*param.opts, *getattr(param, "secondary_opts", ())) if o.startswith("--")]
            named = any(re.search(re.escape(o) + r"(?![\w-])", u) for o in spellings for u in usage)
            if spellings and not named:
                undocumented.append(f"{' '.join(path)} {spellings[0]}")
    assert len(lines) > 20
    assert undocumented == [], undocumented


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("migrate", "--config", "unused.yaml", "--flavor", "columnar"),
         "--flavor: expected hypertable or partitioned, got 'columnar'"),
        (("health", "localhost:1", "--db-thresholds", "fast"),
         "--db-thresholds: expected gatherer or production, got 'fast'"),
        (("health", "localhost:1", "--require", "perfect"), "--require: expected healthy or degraded, got 'perfect'"),
    ],
)  # fmt: skip
def test_a_choice_option_names_itself_and_its_choices(args, message):
    """--flavor, --db-thresholds and --require take one of a fixed set: anything else is a usage error (exit 2) that
    names the option, the choices and the value, before anything is connected to."""
    proc = _run(*args)
    assert proc.returncode == 2, proc.stderr
    assert message in " ".join(proc.stderr.split()), proc.stderr


@pytest.mark.parametrize(
    "where", [(), ("--config", "unused.yaml", "--admin-dsn", "postgresql://admin@db/postgres")], ids=["neither", "both"]
)
def test_rotate_password_takes_exactly_one_of_config_or_admin_dsn(where):
    proc = _run("rotate-password", "--user", "gatherer", *where)
    assert proc.returncode == 2, proc.stderr
    assert "give exactly one of --config or --admin-dsn" in proc.stderr
