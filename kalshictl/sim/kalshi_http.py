"""Kalshi's REST conventions shared by every handler of the local exchange and the replay: JSON answers, the error
shape ``{"error": {"code", "message", "details"}}``, query parameters, cursors and the market status filter
(docs/sim.md, "REST")."""

from __future__ import annotations

from typing import Any, overload

import orjson
from aiohttp import web

from kalshictl.sim.markets import ACTIVE, CLOSED, DETERMINED, FINALIZED, INACTIVE, INITIALIZED

# Kalshi's status filter values -> market statuses
STATUS_FILTER = {
    "unopened": frozenset((INITIALIZED,)),
    "open": frozenset((ACTIVE,)),
    "paused": frozenset((INACTIVE,)),
    "closed": frozenset((CLOSED, DETERMINED, "disputed", "amended")),
    "settled": frozenset((FINALIZED,)),
}
TIME_FILTERS = tuple(f"{e}_{f}_ts" for f in ("close", "created", "updated", "settled") for e in ("min", "max"))
TOO_MANY = b'{"error": "too many requests"}'


def json_response(obj: Any, status: int = 200) -> web.Response:
    """Serialise with orjson."""
    return web.Response(body=orjson.dumps(obj), status=status, content_type="application/json")


def error_response(status: int, code: str, message: str, details: str = "") -> web.Response:
    """Kalshi's error shape: ``{"error": {"code", "message", "details"}}``."""
    return json_response({"error": {"code": code, "message": message, "details": details}}, status)


class BadRequest(Exception):
    """Answer 400 with this message."""


@overload
def int_param(request: web.Request, name: str, default: int, lo: int | None = None, hi: int | None = None) -> int: ...
@overload
def int_param(
    request: web.Request, name: str, default: None, lo: int | None = None, hi: int | None = None
) -> int | None: ...
def int_param(
    request: web.Request, name: str, default: int | None, lo: int | None = None, hi: int | None = None
) -> int | None:
    """Query parameter ``name`` as an integer within ``[lo, hi]`` (``default`` when absent or empty)."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer") from None
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise BadRequest(f"{name} must be within [{lo}, {hi}]")
    return value


def list_param(request: web.Request, name: str) -> list[str]:
    """Query parameter ``name``: repeated and/or comma-separated values, empty ones left out."""
    out: list[str] = []
    for raw in request.query.getall(name, []):
        out.extend(t for t in raw.split(",") if t)
    return out


def cursor_param(request: web.Request, prefix: str) -> int:
    """The position in a ``cursor`` of ours (``prefix`` + hex; 0 when absent)."""
    raw = request.query.get("cursor") or ""
    if not raw:
        return 0
    if not raw.startswith(prefix):
        raise BadRequest("invalid cursor")
    try:
        return int(raw[len(prefix) :], 16)
    except ValueError:
        raise BadRequest("invalid cursor") from None


def status_filter(request: web.Request) -> frozenset[str] | None:
    """The market statuses Kalshi's ``status`` filter values name (None = no filter)."""
    raw = request.query.get("status")
    if not raw:
        return None
    out: set[str] = set()
    for s in raw.split(","):
        if s not in STATUS_FILTER:
            raise BadRequest(f"invalid status filter {s!r}")
        out |= STATUS_FILTER[s]
    return frozenset(out)
