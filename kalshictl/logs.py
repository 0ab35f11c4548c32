"""Logging setup for the long-running services (``gather run``, ``dedup run``).

* ``log_level`` applies to kalshictl's own loggers; third-party libraries (botocore, boto3, urllib3, aiohttp,
  asyncio, websockets, psycopg, ...) stay at INFO or above whatever it says: at DEBUG botocore logs whole HTTP
  response bodies, Secrets Manager's ``SecretString`` included.
* A :class:`RedactFilter` on every root handler replaces each known secret value with ``***`` in the message, its
  arguments and any traceback, at every level. :func:`kalshictl.secrets.resolve_secret` registers each value it
  returns (:func:`register_secret`), so a secret resolved once is never printed by a log line afterwards. As a
  second line of defence, ``"SecretString": "..."``/``"password": "..."`` fields are blanked even before their value
  is known.
"""

from __future__ import annotations

import logging
import re
import threading

# Libraries whose DEBUG output may carry request/response bodies, headers or connection strings.
THIRD_PARTY = (
    "botocore",
    "boto3",
    "s3transfer",
    "urllib3",
    "aiohttp",
    "asyncio",
    "websockets",
    "psycopg",
    "psycopg_pool",
    "httpx",
    "httpcore",
    "hpack",
    "moto",
    "werkzeug",
)
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
MASK = "***"
_MIN_LENGTH = 4  # shorter "secrets" would mask ordinary words and numbers

_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None
# JSON/header fields whose value is a secret whatever it is (before the value is registered).
_FIELDS = re.compile(
    r"""(?P<key>["']?(?:SecretString|SecretBinary|password|private_key|secret_access_key)["']?\s*[:=]\s*)"""
    r"""(?P<q>\\?["'])(?P<value>.*?)(?<!\\)(?P=q)""",
    re.IGNORECASE,
)


def register_secret(value: str | None) -> None:
    """Remember a secret value so every later log line masks it (also its JSON-escaped, repr and per-line forms)."""
    if not value:
        return
    import json

    forms = {value, json.dumps(value)[1:-1], repr(value)[1:-1]}
    forms |= {line.strip() for line in value.splitlines()}
    forms = {f for f in forms if len(f) >= _MIN_LENGTH}
    global _pattern
    with _lock:
        if forms <= _secrets:
            return
        _secrets.update(forms)
        # longest first so a value is masked whole before any of its parts
        _pattern = re.compile("|".join(re.escape(s) for s in sorted(_secrets, key=len, reverse=True)))


def redact(text: str) -> str:
    """Mask every registered secret and every secret-named field in ``text``."""
    pattern = _pattern
    if pattern is not None:
        text = pattern.sub(MASK, text)
    return _FIELDS.sub(lambda m: f"{m.group('key')}{m.group('q')}{MASK}{m.group('q')}", text)


class RedactFilter(logging.Filter):
    """Rewrite a record so neither its message nor its traceback carries a known secret (never drops a record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep what we can, masked
            message = f"{record.msg} {record.args}"
        record.msg = redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
            record.exc_info = None  # formatted (and masked) above; the handler prints exc_text
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def setup_logging(level: str) -> None:
    """Configure the root logger for a service: ``level`` for kalshictl, INFO+ for libraries, secrets masked."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    logging.basicConfig(level=numeric, format=FORMAT, force=True)
    for name in THIRD_PARTY:
        logging.getLogger(name).setLevel(max(numeric, logging.INFO))
    root = logging.getLogger()
    for handler in root.handlers:
        if not any(isinstance(f, RedactFilter) for f in handler.filters):
            handler.addFilter(RedactFilter())
    logging.getLogger("kalshictl").debug(
        "logging: kalshictl at %s, libraries at %s or above, secrets masked",
        logging.getLevelName(numeric),
        logging.getLevelName(max(numeric, logging.INFO)),
    )
