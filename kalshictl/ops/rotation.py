"""Password rotation and rollback for one database role (docs/runbooks/password-rotation.md, made restartable).

Order of steps (each names itself in errors):

1. ``read-current``   read the current secret from the store;
2. ``check-current``  it must log in as the role (otherwise store and database already disagree);
3. ``generate``       a new password from :mod:`secrets`;
4. ``stage``          store it as a *pending* version (AWSPENDING / file store ``pending``), readers still get the old;
5. ``alter-role``     ``ALTER ROLE .. PASSWORD '<SCRAM verifier>'`` (computed on the client, never the plaintext);
6. ``promote``        make the pending version current; the old one becomes the previous version (kept);
7. ``restart``        each ``--restart`` command, in order (argv from :func:`shlex.split`, no shell, no password);
8. ``verify``         the new password logs in, the old one is rejected.

A failure before ``alter-role`` changes nothing that matters; a failure at ``promote`` puts the old password back in
the database; later failures leave database and store consistent (new password) so the operator can finish the
restarts or run ``--rollback``. The password is held only in memory: never in argv, env, logs or output.
"""

from __future__ import annotations

import os
import secrets
import shlex
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import psycopg

from kalshictl.config import DatabaseSettings, SecretRef
from kalshictl.db.connect import connect, connect_kwargs, explain_connect_error
from kalshictl.db.dsn import dsn_has_password, parse_dsn, with_params
from kalshictl.db.roles import ROLES, role_exists, set_password
from kalshictl.errors import ConfigError, DatabaseUnreachable, KalshiCtlError
from kalshictl.secrets.aws import CURRENT, PENDING, PREVIOUS, AwsSecretStore
from kalshictl.secrets.filestore import FileSecretStore

if TYPE_CHECKING:
    from kalshictl.config import Settings

StepFn = Callable[[str, str, str], None]


class RotationError(KalshiCtlError):
    """A rotation step failed; the message says which and what state it left, the hint what to run next."""


class VersionedStore(Protocol):
    """A secret with versions: current, previous, pending (values only through :meth:`value`)."""

    label: str

    def current(self) -> tuple[str | None, str]: ...
    def previous(self) -> str | None: ...
    def pending(self) -> str | None: ...
    def value(self, version_id: str) -> str: ...
    def put_pending(self, value: str) -> str: ...
    def make_current(self, version_id: str) -> None: ...
    def clear_pending(self) -> None: ...


class AwsStore:
    """A Secrets Manager secret bound to its id."""

    def __init__(self, secret_id: str) -> None:
        self.secret_id = secret_id
        self.label = f"aws-sm:{secret_id}"
        self._sm = AwsSecretStore()

    def current(self) -> tuple[str | None, str]:
        return self._sm.version_with(self.secret_id, CURRENT), self._sm.get(self.secret_id, stage=CURRENT)

    def previous(self) -> str | None:
        return self._sm.version_with(self.secret_id, PREVIOUS)

    def pending(self) -> str | None:
        for version_id, labels in self._sm.stages(self.secret_id).items():
            if PENDING in labels and CURRENT not in labels:
                return version_id
        return None

    def value(self, version_id: str) -> str:
        return self._sm.get(self.secret_id, version_id=version_id)

    def put_pending(self, value: str) -> str:
        return self._sm.put_pending(self.secret_id, value)

    def make_current(self, version_id: str) -> None:
        self._sm.make_current(self.secret_id, version_id)
        self._sm.clear_pending(self.secret_id)

    def clear_pending(self) -> None:
        self._sm.clear_pending(self.secret_id)


class FileStore:
    """A local versioned store file (mode 0600)."""

    def __init__(self, path: str) -> None:
        self.label = f"file:{path}"
        self._fs = FileSecretStore(path)

    def current(self) -> tuple[str | None, str]:
        return self._fs.current_version(), self._fs.current_value()

    def previous(self) -> str | None:
        return self._fs.previous_version()

    def pending(self) -> str | None:
        return self._fs.pending_version()

    def value(self, version_id: str) -> str:
        return self._fs.get_version(version_id)

    def put_pending(self, value: str) -> str:
        return self._fs.put_pending(value)

    def make_current(self, version_id: str) -> None:
        self._fs.make_current(version_id)

    def clear_pending(self) -> None:
        self._fs.clear_pending()


def open_store(secret: str, kind: str | None) -> VersionedStore:
    """Bind a store from ``--secret`` (an id, a path, or an ``aws-sm:``/``file:`` reference) and ``--store``."""
    if secret.startswith("aws-sm:"):
        kind, secret = kind or "aws", secret.removeprefix("aws-sm:")
    elif secret.startswith("file:"):
        kind, secret = kind or "file", secret.removeprefix("file:")
    elif secret.startswith("env:"):
        raise ConfigError(f"--secret {secret}: an environment variable cannot be rotated; use aws-sm: or file:")
    kind = kind or "aws"
    if "#" in secret and kind == "aws":
        raise ConfigError("--secret: JSON-keyed secrets (id#key) are not supported by rotate-password")
    if kind == "aws":
        return AwsStore(secret)
    if kind == "file":
        return FileStore(secret)
    raise ConfigError(f"--store: expected aws or file, got {kind!r}")


@dataclass
class RotationTarget:
    """Where and how to rotate: the role, its store, an admin connection and the role's own login settings."""

    user: str
    store: VersionedStore
    admin: DatabaseSettings
    login: DatabaseSettings
    restarts: list[str] = field(default_factory=list)
    restart_timeout_s: float = 300.0
    scrub_env: tuple[str, ...] = ()
    command: str = "kalshictl rotate-password"


def target_from_config(settings: Settings, user: str) -> tuple[DatabaseSettings, DatabaseSettings, str | None]:
    """(admin settings, login settings, secret reference) of a role from a config file."""
    spec = next((r for r in ROLES if r.name == user), None)
    if spec is None:
        raise ConfigError(f"--user: {user!r} is not one of the service roles ({', '.join(r.name for r in ROLES)})")
    if spec.target == "gatherer":
        db = settings.require("gatherer").database
    elif settings.deduplicator is not None:
        db = settings.deduplicator.production
    else:
        db = settings.require("exporter").production
    if not db.admin_dsn:
        raise ConfigError(f"{spec.target} database: admin_dsn is required to change a role's password")
    login = (
        db if parse_dsn(db.dsn).get("user") == user else db.model_copy(update={"dsn": with_params(db.dsn, user=user)})
    )
    ref = getattr(settings.roles, user)
    return db, login.model_copy(update={"password": None}), None if ref is None else str(ref)


def target_from_dsn(
    admin_dsn: str,
    password_env: str | None,
    user: str,
    *,
    sslrootcert: str | None = None,
    allow_insecure: bool = False,
) -> tuple[DatabaseSettings, DatabaseSettings]:
    """(admin settings, login settings) from ``--admin-dsn`` and ``--admin-password-env``: both connections use the
    TLS rules of a remote database in the config (:func:`kalshictl.config.command_line_database`)."""
    from kalshictl.config import command_line_database

    if dsn_has_password(admin_dsn):
        raise ConfigError("--admin-dsn must not contain a password; use --admin-password-env NAME")
    secret = SecretRef(f"env:{password_env}") if password_env else None
    tls = command_line_database(admin_dsn, option="--admin-dsn", sslrootcert=sslrootcert, allow_insecure=allow_insecure)
    admin = tls.model_copy(update={"admin_dsn": admin_dsn, "admin_password": secret})
    return admin, tls.model_copy(update={"dsn": with_params(admin_dsn, user=user)})


# -- database helpers ------------------------------------------------------------------------------------------


def logs_in(login: DatabaseSettings, password: str) -> bool:
    """True if the role logs in with this password, False if the server rejects it; raise if unreachable."""
    kwargs = connect_kwargs(login.model_copy(update={"password": None}))
    kwargs["password"] = password
    kwargs["passfile"] = os.devnull
    try:
        with psycopg.connect(**kwargs) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.OperationalError as exc:
        text = str(exc).lower()
        if "password authentication failed" in text or "authentication failed" in text:
            return False
        raise explain_connect_error(exc, kwargs["conninfo"]) from None


def _set_db_password(admin: DatabaseSettings, user: str, password: str) -> None:
    with connect(admin, admin=True, autocommit=True) as conn:
        if not role_exists(conn, user):
            raise KalshiCtlError(f"role {user!r} does not exist (run `kalshictl init-db` first)")
        set_password(conn, user, password)


def _generate() -> str:
    return secrets.token_urlsafe(32)  # 256 bits, URL/shell/libpq safe


# The only variables a restart command inherits (no credentials, no KALSHI_* overrides, no AWS_* keys).
RESTART_ENV = frozenset(("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "XDG_RUNTIME_DIR"))


def run_restarts(t: RotationTarget, step: StepFn) -> list[dict]:
    """Run each restart command in order (no shell, a minimal env: :data:`RESTART_ENV`); stop at the first failure."""
    env = {k: v for k, v in os.environ.items() if k in RESTART_ENV and k not in t.scrub_env}
    done: list[dict] = []
    for i, cmd in enumerate(t.restarts, 1):
        try:
            argv = shlex.split(cmd)
            proc = subprocess.run(
                argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=t.restart_timeout_s
            )
            code, tail = proc.returncode, (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:]
        except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
            code, tail = None, [type(exc).__name__ + (f": {exc.strerror}" if isinstance(exc, OSError) else "")]
        if code != 0:
            remaining = " ".join(f"--restart {shlex.quote(c)}" for c in t.restarts[i - 1 :])
            raise RotationError(
                f"step restart {i}/{len(t.restarts)} failed: `{cmd}` exited {code if code is not None else '-'}"
                f"{': ' + tail[0] if tail else ''}. The database and the store are already updated.",
                hint=f"fix the service and run the remaining restarts ({remaining}), or roll back with "
                f"`{t.command} --rollback`",
            )
        done.append({"command": cmd, "exit": code})
        step("restart", "ok", f"{i}/{len(t.restarts)} {cmd}")
    return done


# -- rotation and rollback -------------------------------------------------------------------------------------


def rotate(t: RotationTarget, step: StepFn) -> dict:
    """Rotate the role's password (see the module docstring). Returns a summary without any password."""
    try:
        old_version, old = t.store.current()
    except KalshiCtlError as exc:
        raise RotationError(f"step read-current failed: {exc}. Nothing changed.", hint=exc.hint) from None
    step("read-current", "ok", f"{t.store.label} version {old_version}")
    try:
        current_ok = logs_in(t.login, old)
    except DatabaseUnreachable as exc:
        raise DatabaseUnreachable(f"step check-current failed: {exc}. Nothing changed.", hint=exc.hint) from None
    if not current_ok:
        raise RotationError(
            f"step check-current failed: the current secret in {t.store.label} does not log in as {t.user}. "
            "Nothing changed: the store and the database already disagree.",
            hint=f"if a rotation was interrupted run `{t.command} --rollback`; else fix the secret, then rotate",
        )
    step("check-current", "ok", f"current secret logs in as {t.user}")
    new = _generate()
    step("generate", "ok", "256-bit random password")
    try:
        new_version = t.store.put_pending(new)
    except KalshiCtlError as exc:
        raise RotationError(f"step stage failed: {exc}. Nothing changed.", hint=f"rerun `{t.command}`") from None
    step("stage", "ok", f"pending version {new_version}")
    try:
        _set_db_password(t.admin, t.user, new)
    except KalshiCtlError as exc:
        _quietly(t.store.clear_pending)
        raise RotationError(
            f"step alter-role failed: {exc}. The database password is unchanged.",
            hint=f"fix it and rerun `{t.command}`",
        ) from None
    step("alter-role", "ok", "SCRAM-SHA-256 verifier set")
    try:
        t.store.make_current(new_version)
    except KalshiCtlError as exc:
        try:
            _set_db_password(t.admin, t.user, old)
        except KalshiCtlError:
            raise RotationError(
                f"step promote failed: {exc}; restoring the old password in the database also failed. The database "
                f"has the new password (pending version {new_version}); the store still serves the old one.",
                hint=f"run `{t.command} --rollback` (sets the database back to the store's current version)",
            ) from None
        _quietly(t.store.clear_pending)
        raise RotationError(
            f"step promote failed: {exc}. The old password was restored in the database; nothing changed.",
            hint=f"rerun `{t.command}`",
        ) from None
    step("promote", "ok", f"current {new_version}, previous {old_version} kept")
    restarts = run_restarts(t, step)
    _verify(t, new, old, "the new")
    step("verify", "ok", "new password logs in; old one rejected")
    return {
        "action": "rotate",
        "user": t.user,
        "secret": t.store.label,
        "current_version": new_version,
        "previous_version": old_version,
        "restarts": restarts,
        "ok": True,
    }


def rollback(t: RotationTarget, step: StepFn) -> dict:
    """Restore the previous version in the database and the store (or abort a half-done rotation)."""
    try:
        current_version, current = t.store.current()
        pending = t.store.pending()
        previous = t.store.previous()
    except KalshiCtlError as exc:
        raise RotationError(f"step read-current failed: {exc}. Nothing changed.", hint=exc.hint) from None
    if pending:
        # an interrupted rotation: the store still serves the current version; the database may hold the pending one
        target_version, target, replaced = current_version, current, t.store.value(pending)
        step("read-current", "ok", f"pending version {pending} found: restoring current {current_version}")
    elif previous:
        target_version, target, replaced = previous, t.store.value(previous), current
        step("read-current", "ok", f"restoring previous version {previous} (current {current_version})")
    else:
        raise RotationError(f"step read-current failed: {t.store.label} has no previous version to roll back to")
    try:
        _set_db_password(t.admin, t.user, target)
    except KalshiCtlError as exc:
        raise RotationError(
            f"step alter-role failed: {exc}. Nothing changed.", hint=f"fix it and rerun `{t.command} --rollback`"
        ) from None
    step("alter-role", "ok", f"database set to version {target_version}")
    try:
        if pending:
            t.store.clear_pending()
        elif previous:  # (the only other way here: the rollback target is the previous version)
            t.store.make_current(previous)
    except KalshiCtlError as exc:
        raise RotationError(
            f"step promote failed: {exc}. The database already has version {target_version}'s password.",
            hint=f"rerun `{t.command} --rollback`",
        ) from None
    step("promote", "ok", f"current {target_version}")
    restarts = run_restarts(t, step)
    _verify(t, target, replaced, "the restored")
    step("verify", "ok", "restored password logs in; replaced one rejected")
    return {
        "action": "rollback",
        "user": t.user,
        "secret": t.store.label,
        "current_version": target_version,
        "replaced_version": pending or current_version,
        "restarts": restarts,
        "ok": True,
    }


def _verify(t: RotationTarget, good: str, bad: str, what: str) -> None:
    try:
        good_ok = logs_in(t.login, good)
        bad_ok = good != bad and logs_in(t.login, bad)
    except DatabaseUnreachable as exc:
        raise RotationError(
            f"step verify failed: {exc}. Database and store were both updated.",
            hint=f"check the server, then `kalshictl health --check-db ...`; roll back with `{t.command} --rollback`",
        ) from None
    if not good_ok:
        raise RotationError(
            f"step verify failed: {what} password does not log in as {t.user}.",
            hint=f"run `{t.command} --rollback`",
        )
    if bad_ok:
        raise RotationError(
            f"step verify failed: the replaced password still logs in as {t.user} (pg_hba trust/peer for this role?).",
            hint="make pg_hba require scram-sha-256 for this role (deploy/pg_hba/), then verify again",
        )


def _quietly(fn: Callable[[], None]) -> None:
    try:
        fn()
    except KalshiCtlError:
        pass
