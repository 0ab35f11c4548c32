"""DSN helpers: parse, redact, and build connection keyword arguments without ever exposing a password."""

from __future__ import annotations

from typing import Any

from kalshictl.errors import ConfigError


def parse_dsn(dsn: str) -> dict[str, str]:
    """Parse a libpq URI or key=value string into a dict (raises ConfigError on a malformed DSN)."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        return {k: str(v) for k, v in conninfo_to_dict(dsn).items()}
    except Exception as exc:  # psycopg.ProgrammingError
        raise ConfigError(f"invalid DSN {redact_dsn(dsn)!r}: {str(exc).splitlines()[0]}") from None


def dsn_has_password(dsn: str) -> bool:
    """True if the DSN embeds a password, or cannot be parsed (fail closed: it might hide one)."""
    try:
        return "password" in parse_dsn(dsn)
    except ConfigError:
        return True


def redact_dsn(dsn: str) -> str:
    """Return the DSN with any password replaced by ``***`` (safe to print)."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        params = conninfo_to_dict(dsn)
    except Exception:
        return "<unparseable DSN>"
    if "password" in params:
        params["password"] = "***"
    return make_conninfo("", **params)


def describe(dsn: str) -> str:
    """A short human label for a DSN: ``user@host:port/dbname``."""
    try:
        p = parse_dsn(dsn)
    except ConfigError:
        return "<invalid DSN>"
    return f"{p.get('user', '?')}@{p.get('host', 'localhost')}:{p.get('port', '5432')}/{p.get('dbname', '?')}"


def with_params(dsn: str, **params: Any) -> str:
    """Return the DSN with some parameters replaced (None removes nothing)."""
    from psycopg.conninfo import make_conninfo

    return make_conninfo(dsn, **{k: v for k, v in params.items() if v is not None})
