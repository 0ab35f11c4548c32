"""Probe services' ``/health`` endpoints and databases, once or until a requirement holds (``--wait``).

A probe result is a dict: ``target``, ``kind`` (``http``/``db``), ``status`` (``healthy``/``degraded``/``unhealthy``/
``unreachable``), ``http_code`` or ``latency_ms``, and ``detail``. A requirement (``healthy`` or ``degraded`` or
better) holds when every target (or, with ``any_``, at least one) meets it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit, urlunsplit

import httpx

from kalshictl.config import DatabaseSettings, SecretRef, command_line_database
from kalshictl.db.connect import connect_async, ping_async
from kalshictl.db.dsn import describe, dsn_has_password, with_params
from kalshictl.errors import ConfigError, DatabaseUnreachable, Unhealthy, WaitTimeout, summarize
from kalshictl.health import thresholds as th

if TYPE_CHECKING:
    from kalshictl.config import Settings

Require = Literal["healthy", "degraded"]
REQUIRES: tuple[Require, ...] = ("healthy", "degraded")
Thresholds = Literal["gatherer", "production"]  # docs/cli.md: production < 50 ms healthy, gatherer < 100 ms
THRESHOLDS: tuple[Thresholds, ...] = ("gatherer", "production")
_OK: dict[str, set[str]] = {"healthy": {"healthy"}, "degraded": {"healthy", "degraded"}}


@dataclass
class DbTarget:
    """A database to ping: connection settings (password as a secret reference) and which thresholds apply."""

    settings: DatabaseSettings
    thresholds: Thresholds = "production"

    @property
    def label(self) -> str:
        return describe(self.settings.dsn)


@dataclass
class Targets:
    """What to probe."""

    urls: list[str] = field(default_factory=list)
    dbs: list[DbTarget] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.urls or self.dbs)


def health_url(url: str) -> str:
    """Normalise a service address to its /health URL (``host:8080`` -> ``http://host:8080/health``)."""
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"not an http(s) URL: {url!r}")
    path = parts.path if parts.path not in ("", "/") else "/health"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def urls_from_config(settings: Settings) -> list[str]:
    """Health URLs in a config: each ``deduplicator.gatherers[].health_url``, and the gatherer's own listener."""
    urls = []
    if settings.deduplicator is not None:
        urls += [health_url(g.health_url) for g in settings.deduplicator.gatherers if g.health_url]
    if settings.gatherer is not None:
        http = settings.gatherer.http
        host = "127.0.0.1" if http.host in ("0.0.0.0", "::", "") else http.host
        urls.append(f"http://{host}:{http.port}/health")
    return urls


def db_from_dsn(
    dsn: str,
    *,
    password_env: str | None,
    settings: Settings | None,
    sslrootcert: str | None = None,
    allow_insecure: bool = False,
) -> DbTarget:
    """A database target from ``--check-db``: a DSN, or a name in the config (``production``, ``gatherer``, or a
    deduplicator gatherer source's name; ``NAME:admin`` uses its admin_dsn/admin_password on the maintenance
    database ``postgres``). The password comes from
    ``--password-env`` or the matching config DB. A DSN not in the config connects with the TLS rules of a remote
    database (verify-full by default; ``sslrootcert``, ``allow_insecure``)."""
    if "://" not in dsn and "=" not in dsn:
        if settings is None:
            raise ConfigError(f"--check-db {dsn}: not a DSN; a database name needs --config")
        named = dict(config_databases(settings, named=True))
        name, _, role = dsn.partition(":")
        if name not in named or role not in ("", "admin"):
            raise ConfigError(
                f"--check-db {dsn}: no such database in the config (have: {', '.join(named)}; add :admin for admin_dsn)"
            )
        db, kind = named[name]
        if role == "admin":
            if not db.admin_dsn:
                raise ConfigError(f"--check-db {dsn}: that database has no admin_dsn in the config")
            # the maintenance database, as init-db uses: the target database may not exist yet
            maintenance = with_params(db.admin_dsn, dbname="postgres")
            db = db.model_copy(update={"dsn": maintenance, "password": db.admin_password})
        return DbTarget(db, kind)
    if dsn_has_password(dsn):
        raise ConfigError("--check-db: the DSN must not contain a password; use --password-env NAME or --config")
    if settings is not None and not password_env:
        for db, kind in config_databases(settings):
            if dsn in (db.dsn, db.admin_dsn) or describe(dsn) == describe(db.dsn):
                return DbTarget(db, kind)  # the config's own TLS settings
    password = SecretRef(f"env:{password_env}") if password_env else None
    return DbTarget(
        command_line_database(
            dsn, option="--check-db", password=password, sslrootcert=sslrootcert, allow_insecure=allow_insecure
        )
    )


def config_databases(settings: Settings, *, named: bool = False) -> list[Any]:
    """Every database a config connects to, with the thresholds that apply to it (``named``: keyed by a name)."""
    out: list[tuple[str, tuple[DatabaseSettings, str]]] = []
    if settings.gatherer is not None:
        out.append(("gatherer", (settings.gatherer.database, "gatherer")))
    if settings.deduplicator is not None:
        out.append(("production", (settings.deduplicator.production, "production")))
        out += [(g.name, (g.database, "gatherer")) for g in settings.deduplicator.gatherers]
    if settings.exporter is not None and settings.deduplicator is None:
        out.append(("production", (settings.exporter.production, "production")))
    return out if named else [pair for _, pair in out]


# -- probes ----------------------------------------------------------------------------------------------------


async def probe_http(client: Any, url: str) -> dict[str, Any]:
    """GET a /health URL: the body's ``status`` (docs/runbooks/reading-health.md), else 200 healthy, 503 unhealthy."""
    start = time.perf_counter()
    try:
        resp = await client.get(url)
    except httpx.HTTPError as exc:
        detail = str(exc).strip() or type(exc).__name__
        return {"target": url, "kind": "http", "status": "unreachable", "http_code": None, "detail": detail}
    latency = (time.perf_counter() - start) * 1000.0
    status = None
    try:
        body = resp.json()
        status = body.get("status") if isinstance(body, dict) else None
    except ValueError:
        pass
    if status not in ("healthy", "degraded", "unhealthy"):
        status = "healthy" if resp.status_code == 200 else "unhealthy"
    return {
        "target": url,
        "kind": "http",
        "status": status,
        "http_code": resp.status_code,
        "latency_ms": round(latency, 3),
        "detail": None,
    }


async def probe_db(db: DbTarget, timeout_s: float = 5.0) -> dict[str, Any]:
    """Connect and ping (``SELECT 1``); status from the latency thresholds of that database kind (docs/cli.md)."""
    out: dict[str, Any] = {"target": db.label, "kind": "db", "thresholds": db.thresholds}
    settings = db.settings.model_copy(update={"connect_timeout_s": min(db.settings.connect_timeout_s, timeout_s)})
    try:
        conn = await connect_async(settings, autocommit=True)
    except DatabaseUnreachable as exc:
        return {**out, "status": "unreachable", "latency_ms": None, "detail": str(exc), "auth_failed": _auth(exc)}
    try:
        ping_ms = await ping_async(conn)
        ssl = bool(conn.pgconn.ssl_in_use)
    except Exception as exc:
        return {**out, "status": "unreachable", "latency_ms": None, "detail": summarize(exc)}
    finally:
        await conn.close()
    fn = th.gatherer_db_status if db.thresholds == "gatherer" else th.production_db_status
    return {**out, "status": fn(True, ping_ms), "latency_ms": round(ping_ms, 3), "ssl": ssl, "detail": None}


def _auth(exc: Exception) -> bool:
    """The server answered but refused us (credentials, missing role or database): waiting will not help."""
    text = str(exc).lower()
    return any(
        s in text for s in ("authentication failed", "no password supplied", "does not exist", "permission denied")
    )


async def probe_all(targets: Targets, timeout_s: float) -> list[dict[str, Any]]:
    """Probe every target concurrently."""
    async with httpx.AsyncClient(timeout=timeout_s, follow_redirects=False) as client:
        jobs = [probe_http(client, u) for u in targets.urls] + [probe_db(d, timeout_s) for d in targets.dbs]
        return list(await asyncio.gather(*jobs))


def holds(results: list[dict[str, Any]], require: Require, any_: bool) -> bool:
    """Whether the requirement holds for all (or any) of the results."""
    good = [r["status"] in _OK[require] for r in results]
    return (any(good) if any_ else all(good)) if good else False


# -- the command's logic ---------------------------------------------------------------------------------------


def check(
    targets: Targets,
    *,
    require: Require = "healthy",
    any_: bool = False,
    wait_s: float | None = None,
    interval_s: float = 2.0,
    timeout_s: float = 5.0,
    on_attempt: Callable[[int, list[dict[str, Any]]], None] | None = None,
) -> dict[str, Any]:
    """Probe once, or until the requirement holds within ``wait_s``. Returns the summary; ``ok`` says if it held."""
    if not targets:
        raise ConfigError("nothing to check: give URLs, --check-db DSN, or a --config with health URLs")
    if require not in _OK:
        raise ConfigError(f"--require: expected healthy or degraded, got {require!r}")
    start = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        budget = timeout_s if wait_s is None else max(0.5, min(timeout_s, wait_s - (time.monotonic() - start)))
        results = asyncio.run(probe_all(targets, budget))
        ok = holds(results, require, any_)
        if on_attempt:
            on_attempt(attempt, results)
        elapsed = time.monotonic() - start
        if ok or wait_s is None:
            break
        if any(r.get("auth_failed") for r in results):
            break  # the server is up but refuses the credentials: waiting will not help
        if elapsed + interval_s > wait_s:
            break
        time.sleep(interval_s)
    return {
        "ok": ok,
        "require": require,
        "mode": "any" if any_ else "all",
        "attempts": attempt,
        "elapsed_s": round(time.monotonic() - start, 3),
        "waited": wait_s is not None,
        "results": results,
    }


def raise_for(summary: dict[str, Any], wait_s: float | None) -> None:
    """Map a summary to the documented exit codes: 0 holds, 6 wait timed out, 4 DB unreachable, 3 otherwise."""
    if summary["ok"]:
        return
    results = summary["results"]
    who = "any" if summary["mode"] == "any" else "all"
    need = "healthy" if summary["require"] == "healthy" else "healthy or degraded"
    last = "; ".join(
        f"{r['target']}: {r['status']}" + (f" ({r['detail']})" if r.get("detail") else "") for r in results
    )
    auth = [r for r in results if r.get("auth_failed")]
    if auth:
        raise DatabaseUnreachable(
            f"{auth[0]['detail']}",
            hint="the server is up but refuses us: check the password secret, the role and the database name",
        )
    if wait_s is not None:
        raise WaitTimeout(
            f"timed out after {wait_s:g}s waiting for {who} of {len(results)} target(s) to be {need}; last: {last}",
            hint="check the services (docs/runbooks/reading-health.md) or raise --wait",
        )
    if any(r["kind"] == "db" and r["status"] == "unreachable" for r in results):
        raise DatabaseUnreachable(f"database unreachable; {last}")
    raise Unhealthy(f"requirement not met ({who} {need}); {last}")
