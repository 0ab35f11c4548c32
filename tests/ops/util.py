"""Helpers for the operations tests: run the CLI as operators do (a subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def kctl(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``python -m kalshictl`` with a wide terminal (so tables do not wrap)."""
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "kalshictl", *args], capture_output=True, text=True, env=full_env, timeout=timeout
    )


def kctl_popen(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start ``python -m kalshictl`` in the background (stdout/stderr piped)."""
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "kalshictl", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=full_env,
    )
