"""Helpers for tests: write config files pointing at real clusters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def write_config(path: Path, data: dict[str, Any]) -> Path:
    """Write a YAML config and return its path."""
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def gatherer_db_section(cluster, dbname: str, *, user: str = "gatherer", password_env: str | None = None) -> dict:
    """A database section for a gatherer config on a test cluster (admin = trusted superuser)."""
    section: dict[str, Any] = {
        "dsn": cluster.dsn(dbname, user),
        "admin_dsn": cluster.dsn(dbname, "postgres"),
    }
    if password_env:
        section["password"] = f"env:{password_env}"
    return section
