"""One error type for the whole CLI, mapped to documented exit codes."""

from __future__ import annotations

import importlib
from enum import IntEnum
from types import ModuleType


class ExitCode(IntEnum):
    """Process exit codes of every ``kalshictl`` command (documented in docs/cli.md)."""

    OK = 0
    FAILURE = 1  # the operation failed
    USAGE = 2  # bad usage or bad configuration
    UNHEALTHY = 3  # a health requirement does not hold
    DB_UNREACHABLE = 4  # a database could not be reached or refused our credentials
    TIMEOUT = 6  # a --wait ran out of time


class KalshiCtlError(Exception):
    """An error with a message fit for an operator and the exit code it maps to."""

    exit_code: ExitCode = ExitCode.FAILURE

    def __init__(self, message: str, *, exit_code: ExitCode | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code
        self.hint = hint


class ConfigError(KalshiCtlError):
    """Invalid configuration: the message names the failing key path."""

    exit_code = ExitCode.USAGE


class DatabaseUnreachable(KalshiCtlError):
    """A database could not be reached or refused the credentials (the secret is never in the message)."""

    exit_code = ExitCode.DB_UNREACHABLE


class SecretError(KalshiCtlError):
    """A secret reference could not be resolved (the message names the reference, never the value)."""

    exit_code = ExitCode.USAGE


class Unhealthy(KalshiCtlError):
    """A health requirement does not hold."""

    exit_code = ExitCode.UNHEALTHY


class WaitTimeout(KalshiCtlError):
    """A wait for a condition ran out of time."""

    exit_code = ExitCode.TIMEOUT


class MissingExtra(KalshiCtlError):
    """An optional dependency is not installed: the message names the extra that provides it."""


def import_extra(module: str, extra: str) -> ModuleType:
    """Import an optional dependency (``pyarrow``, ``boto3``), or fail naming the ``kalshictl[extra]`` to install."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] != module.split(".")[0]:
            raise  # the module is there but one of its own imports is broken: show that, not a hint
        raise MissingExtra(
            f"{module} is not installed; it comes with the {extra!r} extra", hint=f"pip install 'kalshictl[{extra}]'"
        ) from None


def summarize(exc: BaseException) -> str:
    """One line for logs and status pages: the exception's type and the first line of its message."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__
