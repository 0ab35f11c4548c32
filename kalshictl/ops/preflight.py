"""The deployment checklist's items a program can check (docs/runbooks/deployment.md).

Each check is a row ``{check, target, ok, detail}``: config valid, secrets resolvable (and ``file:`` secrets private:
mode and owner), each database reachable (TLS in use when ``sslmode`` requires it), and on the databases this host
owns: migrations current, every object owned by the owner role, and each role exactly as docs/security.md says
(privileges on tables, partitions and columns, attributes, memberships, schema CREATE); the configured gatherer
/health endpoints reachable.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from kalshictl.errors import KalshiCtlError

if TYPE_CHECKING:
    from kalshictl.config import DatabaseSettings, Settings
    from kalshictl.db.roles import Target

_TLS_MODES = ("require", "verify-ca", "verify-full")


def _row(check: str, target: str, ok: bool, detail: str | None = None) -> dict[str, Any]:
    return {"check": check, "target": target, "ok": ok, "detail": detail}


def _secret_refs(settings: Settings) -> list[tuple[str, str]]:
    """(key path, reference) of every secret reference in the config."""
    from kalshictl.config import SecretRef

    out: list[tuple[str, str]] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, SecretRef):
            out.append((path, str(node)))
        elif hasattr(node, "__class__") and hasattr(node.__class__, "model_fields"):
            for name in node.__class__.model_fields:
                walk(getattr(node, name), f"{path}.{name}" if path else name)
        elif isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, f"{path}[{i}]")

    walk(settings, "")
    return out


def _owned(settings: Settings) -> list[tuple[str, Target, DatabaseSettings]]:
    """(label, target, settings) of the databases this host's service owns (schema and roles checked there)."""
    out: list[tuple[str, Target, DatabaseSettings]] = []
    if settings.gatherer is not None:
        out.append(("gatherer.database", "gatherer", settings.gatherer.database))
    if settings.deduplicator is not None:
        out.append(("deduplicator.production", "production", settings.deduplicator.production))
    return out


def _remote(settings: Settings) -> list[tuple[str, DatabaseSettings]]:
    out: list[tuple[str, DatabaseSettings]] = []
    if settings.deduplicator is not None:
        out += [(f"deduplicator.gatherers[{g.name}]", g.database) for g in settings.deduplicator.gatherers]
    if settings.exporter is not None:
        out.append(("exporter.production", settings.exporter.production))
    return out


def check_reachable(label: str, db: DatabaseSettings) -> dict[str, Any]:
    """Connect with the service's own credentials; with a TLS sslmode, TLS must be in use."""
    from kalshictl.db.connect import connect, ping
    from kalshictl.db.dsn import describe

    target = f"{label} ({describe(db.dsn)})"
    try:
        with connect(db, autocommit=True) as conn:
            latency = ping(conn)
            ssl = bool(conn.pgconn.ssl_in_use)
    except KalshiCtlError as exc:
        return _row("database reachable", target, False, str(exc))
    from kalshictl.db.dsn import parse_dsn

    mode = db.sslmode or parse_dsn(db.dsn).get("sslmode")
    if mode in _TLS_MODES and not ssl:
        return _row("database reachable", target, False, f"sslmode={mode} but the connection is not TLS")
    tls = f"TLS ({mode or 'prefer'})" if ssl else "no TLS"
    if db.allow_insecure and mode not in ("verify-ca", "verify-full"):
        tls += ", server not verified (allow_insecure)"
    return _row("database reachable", target, True, f"ping {latency:.1f} ms, {tls}")


def check_schema_and_roles(label: str, target: Target, db: DatabaseSettings) -> list[dict[str, Any]]:
    """Migrations current and the service roles/grants, on a database this host owns (admin connection if given)."""
    from kalshictl.db import migrate as mig
    from kalshictl.db.connect import connect
    from kalshictl.db.dsn import parse_dsn
    from kalshictl.db.roles import OWNER_ROLE, check_grants, check_owner

    dbname = parse_dsn(db.dsn).get("dbname", "?")
    try:
        conn = connect(db, admin=bool(db.admin_dsn), autocommit=True)
    except KalshiCtlError as exc:
        return [_row("migrations current", label, False, str(exc))]
    rows = []
    with conn:
        try:
            st = mig.status(conn, target)
            if st.mismatched:
                rows.append(_row("migrations current", label, False, f"changed on disk: {st.mismatched}"))
            elif st.pending:
                names = ", ".join(f"{m.version:03d}_{m.name}" for m in st.pending)
                rows.append(_row("migrations current", label, False, f"pending: {names} (run kalshictl migrate)"))
            else:
                rows.append(_row("migrations current", label, True, f"{len(st.applied)} applied ({st.flavor})"))
        except KalshiCtlError as exc:
            rows.append(_row("migrations current", label, False, str(exc)))
        owner = check_owner(conn)
        rows.append(_row("schema owner", f"{label}: {OWNER_ROLE}", owner["ok"], owner["problem"]))
        for grant in check_grants(conn, dbname, target):
            rows.append(_row("role and grants", f"{label}: {grant['role']}", grant["ok"], grant["problem"]))
    return rows


def check_secret_file(key: str, ref: str) -> dict[str, Any] | None:
    """A ``file:`` secret is private: nothing for other users, no group write, and owned by this user or root (when
    preflight runs as the service user; as root the owner is shown, since the service user is not known here)."""
    import os
    import stat

    if not ref.startswith("file:"):
        return None
    path = Path(ref.removeprefix("file:"))
    try:
        st = path.stat()
    except OSError as exc:
        return _row("secret file private", key, False, f"{path}: {exc.strerror}")
    mode = stat.S_IMODE(st.st_mode)
    problems = []
    if mode & 0o027:
        problems.append(f"mode {mode:04o} lets {'other users' if mode & 0o007 else 'its group'} in (chmod 600)")
    euid = os.geteuid()
    if euid != 0 and st.st_uid not in (euid, 0):
        problems.append(f"owned by uid {st.st_uid}, not this user ({euid}) or root")
    detail = "; ".join(problems) or f"{path}: mode {mode:04o}, owner {st.st_uid}:{st.st_gid}"
    return _row("secret file private", key, not problems, detail)


def check_health_urls(settings: Settings, timeout_s: float = 5.0) -> list[dict[str, Any]]:
    """Each configured gatherer /health endpoint answers (any status)."""
    import asyncio

    from kalshictl.ops import health_check as hc

    if settings.deduplicator is None:
        return []
    urls = [hc.health_url(g.health_url) for g in settings.deduplicator.gatherers if g.health_url]
    if not urls:
        return []
    results = asyncio.run(hc.probe_all(hc.Targets(urls=urls), timeout_s))
    rows = [
        _row("health endpoint reachable", r["target"], r["status"] != "unreachable", r["status"] + _d(r))
        for r in results
    ]
    healthy = sum(r["status"] == "healthy" for r in results)
    rows.append(_row("at least one gatherer healthy", "deduplicator.gatherers", healthy > 0, f"{healthy} healthy"))
    return rows


def _d(r: dict[str, Any]) -> str:
    return f" ({r['detail']})" if r.get("detail") else ""


def run(config: Path, *, check_health: bool = True) -> dict[str, Any]:
    """Run every check; ``ok`` is true only if all pass."""
    from kalshictl.config import load_settings
    from kalshictl.secrets import resolve_secret

    try:
        settings = load_settings(config)
    except KalshiCtlError as exc:
        rows = [_row("config valid", str(config), False, str(exc))]
        return {"config": str(config), "ok": False, "checks": rows}
    rows = [_row("config valid", str(config), True)]
    secrets_ok = True
    for path, ref in _secret_refs(settings):
        try:
            resolve_secret(ref)
            rows.append(_row("secret resolvable", path, True, ref))
        except KalshiCtlError as exc:
            secrets_ok = False
            rows.append(_row("secret resolvable", path, False, str(exc)))
            continue
        private = check_secret_file(path, ref)
        if private is not None:
            rows.append(private)
    if settings.gatherer is not None:  # what the layout can hold (the gatherer logs it against the markets listed)
        w = settings.gatherer.websocket
        detail = (
            f"{w.capacity:,} order-book markets ({w.orderbook_connections} connections x"
            f" {w.subscriptions_per_connection} subscriptions x {w.markets_per_subscription} markets)"
        )
        rows.append(_row("order-book capacity", "gatherer.websocket", w.capacity > 0, detail))
    owned = _owned(settings)
    for label, _target, db in owned:
        rows.append(check_reachable(label, db))
    for label, db in _remote(settings):
        rows.append(check_reachable(label, db))
    for label, target, db in owned:
        rows += check_schema_and_roles(label, target, db)
    if check_health:
        rows += check_health_urls(settings)
    return {
        "config": str(config),
        "ok": all(r["ok"] for r in rows),
        "secrets_ok": secrets_ok,
        "checks": rows,
    }
