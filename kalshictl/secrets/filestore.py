"""A local, versioned secret file store (mode 0600).

A plain file holds the secret as text. A *store* file is JSON
``{"current": "<version-id>", "previous": ..., "pending": ..., "versions": [{"id", "value", "created_at"}...]}`` so that
rotation can stage a pending version and keep the previous one for rollback (the same protocol as Secrets Manager's
AWSPENDING/AWSCURRENT/AWSPREVIOUS labels); ``file:`` references read its current version. Only the versions still
named current, previous or pending are kept (older passwords are pruned on every write), and each write goes to a
fresh temp file opened ``O_EXCL|O_NOFOLLOW`` (mode 0600) renamed over the store, so a planted symlink is never followed.
"""

from __future__ import annotations

import json
import os
import re
import secrets as _secrets
import stat
import time
from pathlib import Path

from kalshictl.errors import SecretError


def read_file_secret(path: Path) -> str:
    """Read a secret from a plain file or the current version of a store file."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SecretError(f"secret file:{path}: file not found") from None
    except PermissionError:
        raise SecretError(f"secret file:{path}: permission denied") from None
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            doc = json.loads(stripped)
        except ValueError:
            doc = None
        if isinstance(doc, dict) and "versions" in doc:
            return FileSecretStore(path).current_value()
    return text.rstrip("\n")


def _next_number(doc: dict) -> int:
    numbers = [int(m.group(1)) for v in doc.get("versions", []) if (m := re.match(r"v(\d+)", str(v.get("id"))))]
    return max(numbers, default=0) + 1


def _pruned(doc: dict) -> dict:
    """Keep only the versions still named: current, previous and pending (old passwords are not kept forever)."""
    keep = {doc.get("current"), doc.get("previous"), doc.get("pending")} - {None}
    versions = doc.get("versions") or []
    if keep:
        doc = {**doc, "versions": [v for v in versions if v.get("id") in keep]}
    return doc


class FileSecretStore:
    """A versioned secret kept in one JSON file with mode 0600."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def _load(self) -> dict:
        if not self.path.exists():
            return {"current": None, "versions": []}
        text = self.path.read_text().strip()
        if not text.startswith("{"):
            # a plain-text secret file becomes the first version of a store
            return {"current": "v1", "versions": [{"id": "v1", "value": text, "created_at": None}]}
        try:
            return json.loads(text)
        except ValueError:
            raise SecretError(f"secret store {self.path}: not valid JSON") from None

    def _owner(self) -> tuple[int, int] | None:
        """(uid, gid) of the store file now, if it is a regular file (a symlink is never followed)."""
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_uid, st.st_gid) if stat.S_ISREG(st.st_mode) else None

    def _save(self, doc: dict) -> None:
        """Prune, then write atomically: a new temp file (O_EXCL|O_NOFOLLOW, 0600, random name) renamed over.

        The new file keeps the old one's owner and group, so a service user can still read its password after root
        rotated it (docs/runbooks/password-rotation.md).
        """
        doc = _pruned(doc)
        owner = self._owner()
        tmp = self.path.with_name(f".{self.path.name}.{_secrets.token_hex(8)}.tmp")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(tmp, flags, 0o600)
        try:
            if owner is not None and owner != (os.geteuid(), os.getegid()):
                try:
                    os.fchown(fd, *owner)
                except PermissionError:
                    os.close(fd)
                    raise SecretError(
                        f"secret store {self.path}: cannot keep its owner {owner[0]}:{owner[1]} (run as root or as"
                        " that user)"
                    ) from None
            with os.fdopen(fd, "w") as fh:
                json.dump(doc, fh, indent=2)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def current_value(self) -> str:
        """The value of the current version."""
        doc = self._load()
        for version in doc["versions"]:
            if version["id"] == doc["current"]:
                return version["value"]
        raise SecretError(f"secret store {self.path}: no current version")

    def versions(self) -> list[str]:
        """Version ids, oldest first."""
        return [v["id"] for v in self._load()["versions"]]

    def current_version(self) -> str | None:
        """The id of the current version."""
        return self._load()["current"]

    def put(self, value: str) -> str:
        """Store a new version, make it current, keep the previous ones; return the new version id."""
        doc = self._load()
        version_id = f"v{_next_number(doc)}-{_secrets.token_hex(4)}"
        doc["versions"].append({"id": version_id, "value": value, "created_at": time.time()})
        doc["previous"] = doc.get("current")
        doc["current"] = version_id
        self._save(doc)
        return version_id

    def previous_version(self) -> str | None:
        """The version that was current before the last put/rollback."""
        return self._load().get("previous")

    def put_pending(self, value: str) -> str:
        """Store a new version marked pending; readers still get the current one. Return its version id."""
        doc = self._load()
        version_id = f"v{_next_number(doc)}-{_secrets.token_hex(4)}"
        doc["versions"].append({"id": version_id, "value": value, "created_at": time.time()})
        doc["pending"] = version_id
        self._save(doc)
        return version_id

    def pending_version(self) -> str | None:
        """The version staged by :meth:`put_pending` and not yet made current."""
        doc = self._load()
        pending = doc.get("pending")
        return pending if pending and pending != doc.get("current") else None

    def clear_pending(self) -> None:
        """Drop the pending mark (the version itself is kept in the history)."""
        doc = self._load()
        if doc.get("pending") is not None:
            doc["pending"] = None
            self._save(doc)

    def get_version(self, version_id: str) -> str:
        """The value of one version."""
        for version in self._load()["versions"]:
            if version["id"] == version_id:
                return version["value"]
        raise SecretError(f"secret store {self.path}: no version {version_id!r}")

    def make_current(self, version_id: str) -> None:
        """Point the store at an existing version (rollback)."""
        doc = self._load()
        if version_id not in [v["id"] for v in doc["versions"]]:
            raise SecretError(f"secret store {self.path}: no version {version_id!r}")
        if doc["current"] != version_id:
            doc["previous"], doc["current"] = doc["current"], version_id
        if doc.get("pending") == version_id:
            doc["pending"] = None
        self._save(doc)
