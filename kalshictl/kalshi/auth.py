"""Kalshi API-key authentication: sign requests (clients) and verify signatures (the local exchange).

Kalshi signs ``ts_ms + METHOD + path`` where ``path`` includes ``/trade-api/v2`` (or ``/trade-api/ws/v2`` for the
WebSocket upgrade) and excludes the query string, host and body. RSA keys sign with RSA-PSS over SHA-256 (MGF1
SHA-256, salt length = digest length); Ed25519 keys sign the same message with Ed25519. Headers:
``KALSHI-ACCESS-KEY``, ``KALSHI-ACCESS-TIMESTAMP`` (Unix milliseconds) and ``KALSHI-ACCESS-SIGNATURE`` (base64).
"""

from __future__ import annotations

import base64
import binascii
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

HEADER_KEY = "KALSHI-ACCESS-KEY"
HEADER_TIMESTAMP = "KALSHI-ACCESS-TIMESTAMP"
HEADER_SIGNATURE = "KALSHI-ACCESS-SIGNATURE"

PrivateKey = RSAPrivateKey | Ed25519PrivateKey
PublicKey = RSAPublicKey | Ed25519PublicKey


def _pss() -> padding.PSS:
    return padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)


def _pem_bytes(pem: str | bytes | Path) -> bytes:
    if isinstance(pem, Path):
        return pem.read_bytes()
    if isinstance(pem, str):
        return pem.encode()
    return pem


def load_private_key(pem: str | bytes | Path, password: bytes | None = None) -> PrivateKey:
    """Load an RSA or Ed25519 private key from PEM text, bytes or a file path."""
    key = serialization.load_pem_private_key(_pem_bytes(pem), password=password)
    if not isinstance(key, RSAPrivateKey | Ed25519PrivateKey):
        raise ValueError("private key must be RSA or Ed25519")
    return key


def load_public_key(pem: str | bytes | Path) -> PublicKey:
    """Load an RSA or Ed25519 public key from PEM text, bytes or a file path."""
    key = serialization.load_pem_public_key(_pem_bytes(pem))
    if not isinstance(key, RSAPublicKey | Ed25519PublicKey):
        raise ValueError("public key must be RSA or Ed25519")
    return key


def signing_path(path_or_url: str) -> str:
    """The part of a path or URL that Kalshi signs: the path without query string or host."""
    if "://" in path_or_url:
        return urlsplit(path_or_url).path
    return path_or_url.split("?", 1)[0]


def sign_message(private_key: PrivateKey, message: bytes) -> bytes:
    """Sign raw bytes with an RSA (PSS/SHA-256) or Ed25519 private key."""
    if isinstance(private_key, Ed25519PrivateKey):
        return private_key.sign(message)
    return private_key.sign(message, _pss(), hashes.SHA256())


def sign_headers(
    key_id: str,
    private_key: PrivateKey | str | bytes | Path,
    method: str,
    path: str,
    *,
    ts_ms: int | None = None,
) -> dict[str, str]:
    """Return the three ``KALSHI-ACCESS-*`` headers for a request to ``path`` (query string ignored)."""
    key: Any = private_key
    if isinstance(key, str | bytes | Path):
        key = load_private_key(key)
    ts = str(int(time.time() * 1000) if ts_ms is None else int(ts_ms))
    message = (ts + method.upper() + signing_path(path)).encode()
    signature = base64.b64encode(sign_message(key, message)).decode()
    return {HEADER_KEY: key_id, HEADER_TIMESTAMP: ts, HEADER_SIGNATURE: signature}


def verify_signature(public_key: PublicKey, ts: str, method: str, path: str, signature_b64: str) -> bool:
    """True if ``signature_b64`` signs ``ts + METHOD + path`` (query string ignored) under ``public_key``."""
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError):
        return False
    message = (str(ts) + method.upper() + signing_path(path)).encode()
    try:
        if isinstance(public_key, Ed25519PublicKey):
            public_key.verify(signature, message)
        else:
            public_key.verify(signature, message, _pss(), hashes.SHA256())
    except (InvalidSignature, ValueError):
        return False
    return True
