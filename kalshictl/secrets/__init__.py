"""Secret references (``env:``, ``file:``, ``aws-sm:``) resolved late and never printed."""

from __future__ import annotations

import json
import os
from pathlib import Path

from kalshictl.errors import SecretError


def resolve_secret(ref: str) -> str:
    """Resolve a secret reference to its value.

    * ``env:NAME`` — the environment variable NAME;
    * ``file:/path`` — the file's content, trailing newline stripped (a file store's JSON is read at its current
      version, see :mod:`kalshictl.secrets.filestore`);
    * ``aws-sm:secret-id`` or ``aws-sm:secret-id#json-key`` — AWS Secrets Manager (endpoint from ``AWS_ENDPOINT_URL``).

    Errors name the reference, never the value. Every value returned is registered with
    :func:`kalshictl.logs.register_secret`, so no later log line can print it.
    """
    from kalshictl.logs import register_secret

    value = _resolve(ref)
    register_secret(value)
    return value


def _resolve(ref: str) -> str:
    scheme, _, rest = ref.partition(":")
    if not rest:
        raise SecretError(f"secret reference {ref!r} is empty")
    if scheme == "env":
        value = os.environ.get(rest)
        if value is None:
            raise SecretError(f"secret {ref}: environment variable {rest} is not set")
        return value
    if scheme == "file":
        from kalshictl.secrets.filestore import read_file_secret

        return read_file_secret(Path(rest))
    if scheme == "aws-sm":
        secret_id, _, json_key = rest.partition("#")
        from kalshictl.secrets.aws import AwsSecretStore

        value = AwsSecretStore().get(secret_id)  # registers the whole document for redaction
        if json_key:
            try:
                return str(json.loads(value)[json_key])
            except (ValueError, KeyError, TypeError):
                raise SecretError(f"secret {ref}: key {json_key!r} not found in the secret's JSON") from None
        return value
    raise SecretError(f"secret reference {ref!r}: unknown scheme {scheme!r} (use env:, file: or aws-sm:)")
