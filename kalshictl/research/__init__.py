"""Research-side tools over production: Parquet export, point-in-time order books, verification and coverage."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kalshictl.config import DatabaseSettings, Settings


def research_db(settings: Settings) -> DatabaseSettings:
    """The production database a research command reads: ``exporter.production`` (read-only role), else
    ``deduplicator.production``."""
    from kalshictl.errors import ConfigError

    if settings.exporter is not None:
        return settings.exporter.production
    if settings.deduplicator is not None:
        return settings.deduplicator.production
    where = f" in {settings.source_path}" if settings.source_path else ""
    raise ConfigError(f"exporter: section missing{where}", hint="add exporter.production (read as the exporter role)")
