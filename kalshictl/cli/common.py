"""Options and helpers shared by command modules (kept light: no heavy imports at module level)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import typer

if TYPE_CHECKING:
    from kalshictl.config import DatabaseSettings, Settings
    from kalshictl.db.roles import Target

Choice = TypeVar("Choice", bound=str)

CONFIG_OPTION = typer.Option(
    ..., "--config", "-c", envvar="KALSHI_CONFIG", help="YAML config file (e.g. /etc/kalshi/gatherer.yaml)."
)
JSON_OPTION = typer.Option(False, "--json", help="Machine-readable JSON output.")
TARGET_OPTION = typer.Option(
    None, "--target", "-t", help="Which database: gatherer or production (default: inferred from the config)."
)


def load(config: Path) -> Settings:
    """Load and validate a config file (ConfigError -> exit 2)."""
    from kalshictl.config import load_settings

    return load_settings(config)


def choose(option: str, value: str, choices: tuple[Choice, ...]) -> Choice:
    """``value`` as one of ``choices`` (a Literal type's values), or a ConfigError naming ``option`` (exit 2)."""
    from kalshictl.errors import ConfigError

    for choice in choices:
        if value == choice:
            return choice
    raise ConfigError(f"{option}: expected {' or '.join(choices)}, got {value!r}")


def resolve_target(settings: Settings, target: str | None) -> tuple[Target, DatabaseSettings]:
    """Pick the database a migrate/init-db command works on."""
    from kalshictl.errors import ConfigError

    if target is None:
        has_g = settings.gatherer is not None
        has_p = settings.deduplicator is not None
        if has_g and not has_p:
            target = "gatherer"
        elif has_p and not has_g:
            target = "production"
        else:
            raise ConfigError("--target: the config has both or neither gatherer/deduplicator sections; say which")
    if target == "gatherer":
        return "gatherer", settings.require("gatherer").database
    if target == "production":
        return "production", settings.require("deduplicator").production
    raise ConfigError(f"--target: expected gatherer or production, got {target!r}")
