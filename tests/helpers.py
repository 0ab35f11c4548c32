"""Helpers for tests: write config files pointing at real clusters."""

from __future__ import annotations

import time
from collections.abc import Callable
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


def cpu_cost(fn: Callable[..., Any], *args: Any, tries: int = 3) -> tuple[Any, float]:
    """``fn(*args)``'s result (or the exception it raised) and its cost: the least CPU time of this thread over
    ``tries`` calls, in seconds. CPU time, so that a shared, loaded machine preempting the test does not count; the
    work of parsing a hostile value does."""
    best = float("inf")
    out: Any = None
    for _ in range(tries):
        t0 = time.thread_time()
        try:
            out = fn(*args)
        except Exception as exc:
            out = exc
        best = min(best, time.thread_time() - t0)
    return out, best
