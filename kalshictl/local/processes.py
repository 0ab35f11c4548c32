"""Run pipeline services as real processes (``kalshictl sim|gather run|dedup run``): start, stop, kill -9, restart.

Used by ``kalshictl demo`` and the fault suite, so both exercise exactly what systemd runs in production.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


def kalshictl_argv(*args: str) -> list[str]:
    """argv that runs this installation's kalshictl with the current interpreter."""
    return [sys.executable, "-m", "kalshictl", *args]


@dataclass
class ManagedProcess:
    """One service process with its log file."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    starts: int = 0

    def start(self) -> ManagedProcess:
        """Start (or restart) the process, appending to its log."""
        if self.running:
            return self
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        log.write(f"\n=== start #{self.starts + 1} at {time.strftime('%H:%M:%S')}: {self.name}\n".encode())
        log.flush()
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
        )
        log.close()
        self.starts += 1
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def terminate(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait (graceful shutdown); SIGKILL if it does not exit in time. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL, no cleanup (a crash)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            self.proc.wait(10)

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the log (for error messages)."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Supervisor:
    """A set of managed processes stopped together."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = Path(log_dir)
        self.processes: dict[str, ManagedProcess] = {}

    def add(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> ManagedProcess:
        proc = ManagedProcess(name, argv, self.log_dir / f"{name}.log", env or {})
        self.processes[name] = proc
        return proc

    def __getitem__(self, name: str) -> ManagedProcess:
        return self.processes[name]

    def kill_all(self) -> None:
        for proc in self.processes.values():
            proc.kill()
