"""Root of the ``kalshictl`` command tree.

Each command module defines its group as a module-level ``app`` (or one ``*_cmd`` function); this module composes
them. Command modules are light (typer only); anything heavy is imported inside the command that needs it so
``kalshictl --help`` stays fast. Every :class:`~kalshictl.errors.KalshiCtlError` becomes a one-line message on stderr
and its documented exit code.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import typer

from kalshictl import __version__
from kalshictl.cli import (
    book,
    cold,
    coverage,
    dedup,
    demo,
    export,
    gather,
    health,
    history,
    init_db,
    migrate,
    preflight,
    replay,
    retention,
    rotate_password,
    sim,
)

if TYPE_CHECKING:  # typed against the pinned typer (constraints.txt), which vendors click as typer._click
    from typer._click import Context as ClickContext
    from typer._click.exceptions import ClickException, UsageError
else:
    try:
        from typer._click.exceptions import ClickException, UsageError
    except ImportError:  # a typer from before it vendored click
        from click.exceptions import ClickException, UsageError


def _flags_show_no_type() -> None:
    """Typer's rich help prints every option's type, flags included (``--json <bool>``), as if a flag took a value.
    Show no type for flags, as click's plain help does; value options keep theirs (``--markets <int>``)."""
    from typer.core import TyperOption

    shown = TyperOption.display_type_rich

    def display_type_rich(self: TyperOption, ctx: ClickContext) -> str | None:
        return None if self.is_flag else shown(self, ctx)

    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]  # a patch is the point


_flags_show_no_type()

app = typer.Typer(
    name="kalshictl",
    help="Record every Kalshi market event redundantly, deduplicate it into production, export it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"kalshictl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """kalshictl: the operations toolkit of the Kalshi data pipeline."""


# The tree, in the order --help lists it: groups are each module's ``app``, single commands its ``*_cmd`` function.
app.add_typer(gather.app, name="gather")
app.add_typer(dedup.app, name="dedup")
app.command("migrate")(migrate.migrate_cmd)
app.command("init-db")(init_db.init_db_cmd)
app.command("health")(health.health_cmd)
app.command("rotate-password")(rotate_password.rotate_password_cmd)
app.command("preflight")(preflight.preflight_cmd)
app.command("sim")(sim.sim_cmd)
app.command("export")(export.export_cmd)
app.add_typer(cold.app, name="cold")
app.add_typer(book.app, name="book")
app.command("coverage")(coverage.coverage_cmd)
app.add_typer(history.app, name="history")
app.command("demo")(demo.demo_cmd)
app.add_typer(retention.app, name="retention")
app.command("replay")(replay.replay_cmd)


def main() -> None:
    """Console-script entry point: run the app, mapping KalshiCtlError to its exit code."""
    from kalshictl.errors import ExitCode, KalshiCtlError

    try:
        # standalone_mode=False returns typer.Exit's code instead of raising it; commands otherwise return None
        result = app(standalone_mode=False)
    except KalshiCtlError as exc:
        from kalshictl.cli.output import error

        error(str(exc), exc.hint)
        sys.exit(int(exc.exit_code))
    except typer.Abort:
        sys.exit(130)
    except KeyboardInterrupt:
        sys.exit(130)
    except ClickException as exc:  # usage errors (unknown option, missing argument, ...)
        exc.show()
        sys.exit(ExitCode.USAGE if isinstance(exc, UsageError) else exc.exit_code)
    sys.exit(result if isinstance(result, int) else 0)
