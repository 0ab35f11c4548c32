"""Open connections and pools from :class:`~kalshictl.config.DatabaseSettings`, with operator-grade errors."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from kalshictl.db.dsn import describe
from kalshictl.errors import DatabaseUnreachable

if TYPE_CHECKING:
    import psycopg

    from kalshictl.config import DatabaseSettings


def connect_kwargs(settings: DatabaseSettings, *, admin: bool = False) -> dict[str, Any]:
    """Keyword arguments for psycopg.connect: password resolved now, TLS options applied."""
    dsn = settings.admin_dsn if admin and settings.admin_dsn else settings.dsn
    secret = settings.admin_password if admin and settings.admin_dsn else settings.password
    kwargs: dict[str, Any] = {"conninfo": dsn, "connect_timeout": max(1, int(settings.connect_timeout_s))}
    if secret is not None:
        kwargs["password"] = secret.resolve()
    if settings.sslmode:
        kwargs["sslmode"] = settings.sslmode
    if settings.sslrootcert:
        kwargs["sslrootcert"] = settings.sslrootcert
    kwargs["application_name"] = "kalshictl"
    return kwargs


def explain_connect_error(exc: Exception, dsn: str) -> DatabaseUnreachable:
    """Turn a psycopg connection error into a DatabaseUnreachable that names the target, never the secret."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    # libpq messages never contain the password, but be strict anyway
    hint = None
    lowered = text.lower()
    if "password authentication failed" in lowered or "no password supplied" in lowered:
        hint = "check the password secret reference for this database"
    elif "does not exist" in lowered and "database" in lowered:
        hint = "run `kalshictl init-db` to create it"
    elif "connection refused" in lowered or "could not connect" in lowered:
        hint = "is the server running and listening on that host/port?"
    elif "certificate" in lowered or "ssl" in lowered:
        hint = "check sslmode and sslrootcert (the CA bundle) in the config"
    return DatabaseUnreachable(f"cannot connect to {describe(dsn)}: {text}", hint=hint)


def connect(
    settings: DatabaseSettings, *, admin: bool = False, autocommit: bool = False, **extra: Any
) -> psycopg.Connection:
    """Open a synchronous connection (raises DatabaseUnreachable)."""
    import psycopg

    kwargs = connect_kwargs(settings, admin=admin)
    kwargs.update(extra)
    try:
        return psycopg.connect(autocommit=autocommit, **kwargs)
    except psycopg.Error as exc:
        raise explain_connect_error(exc, kwargs["conninfo"]) from None


async def connect_async(
    settings: DatabaseSettings, *, admin: bool = False, autocommit: bool = False, **extra: Any
) -> psycopg.AsyncConnection:
    """Open an asyncio connection (raises DatabaseUnreachable)."""
    import psycopg

    kwargs = connect_kwargs(settings, admin=admin)
    kwargs.update(extra)
    try:
        return await psycopg.AsyncConnection.connect(autocommit=autocommit, **kwargs)
    except psycopg.Error as exc:
        raise explain_connect_error(exc, kwargs["conninfo"]) from None


def ping(conn: psycopg.Connection) -> float:
    """Round-trip ``SELECT 1`` and return the latency in milliseconds."""
    start = time.perf_counter()
    conn.execute("SELECT 1").fetchone()
    return (time.perf_counter() - start) * 1000.0


async def ping_async(conn: psycopg.AsyncConnection) -> float:
    """Async ``SELECT 1`` round trip in milliseconds."""
    start = time.perf_counter()
    cur = await conn.execute("SELECT 1")
    await cur.fetchone()
    return (time.perf_counter() - start) * 1000.0
