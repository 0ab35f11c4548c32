"""``python -m kalshictl.sim``: the ``kalshictl sim`` command on its own (no other command modules imported)."""

from __future__ import annotations

import typer

from kalshictl.cli.sim import register

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
register(app)  # a single command: typer runs it without a subcommand name


if __name__ == "__main__":
    app()
