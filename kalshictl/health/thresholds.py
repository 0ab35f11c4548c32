"""The health thresholds as pure functions (docs/runbooks/reading-health.md).

Statuses are ``healthy`` / ``degraded`` (HTTP 200) and ``unhealthy`` (HTTP 503). A worse component status always
wins over a better one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["healthy", "degraded", "unhealthy"]
_RANK = {"healthy": 0, "degraded": 1, "unhealthy": 2}

# Gatherer: DB ping < 100 ms healthy, 100-500 degraded, disconnected unhealthy.
GATHERER_DB_HEALTHY_MS = 100.0
GATHERER_DB_DEGRADED_MS = 500.0
# Deduplicator: production ping < 50 ms healthy, 50-200 degraded.
PRODUCTION_DB_HEALTHY_MS = 50.0
PRODUCTION_DB_DEGRADED_MS = 200.0
# WebSocket (for 150 connections): >= 140 healthy, 100-139 degraded, < 100 unhealthy.
WS_SEED_TARGET = 150
WS_SEED_HEALTHY = 140
WS_SEED_UNHEALTHY_BELOW = 100
# Sync lag: < 5 s healthy, 5-30 s degraded, > 30 s unhealthy.
LAG_HEALTHY_S = 5.0
LAG_UNHEALTHY_S = 30.0
# Coverage (docs/gatherer.md): a recordable market that is not placed in any subscription is not being recorded, and
# one without a trusted book for this long is not being recorded correctly; either makes the gatherer unhealthy.
# A resync takes well under 2 s; the initial subscription of ~3,000 markets a connection takes longer.
UNTRUSTED_UNHEALTHY_S = 60.0


def worst(*statuses: Status) -> Status:
    """The worst of several statuses."""
    return max(statuses, key=_RANK.__getitem__) if statuses else "healthy"


def http_code(status: Status) -> int:
    """200 for healthy/degraded, 503 for unhealthy."""
    return 503 if status == "unhealthy" else 200


def db_status(connected: bool, ping_ms: float | None, healthy_ms: float, degraded_ms: float) -> Status:
    """Database status from connectivity and ping latency.

    The thresholds leave pings above the degraded band unspecified; a connected database that answers slower than that
    is reported ``degraded`` (only disconnection is critical).
    """
    if not connected or ping_ms is None:
        return "unhealthy"
    if ping_ms < healthy_ms:
        return "healthy"
    return "degraded"


def gatherer_db_status(connected: bool, ping_ms: float | None) -> Status:
    """TimescaleDB component of the gatherer (< 100 ms healthy)."""
    return db_status(connected, ping_ms, GATHERER_DB_HEALTHY_MS, GATHERER_DB_DEGRADED_MS)


def production_db_status(connected: bool, ping_ms: float | None) -> Status:
    """Production RDS component of the deduplicator (< 50 ms healthy)."""
    return db_status(connected, ping_ms, PRODUCTION_DB_HEALTHY_MS, PRODUCTION_DB_DEGRADED_MS)


def ws_thresholds(target: int) -> tuple[int, int]:
    """(healthy_at_least, unhealthy_below) scaled from 140/100 of 150 to ``target`` connections."""
    if target <= 0:
        return 0, 0
    if target == WS_SEED_TARGET:
        return WS_SEED_HEALTHY, WS_SEED_UNHEALTHY_BELOW
    import math

    healthy = math.ceil(target * WS_SEED_HEALTHY / WS_SEED_TARGET)
    unhealthy_below = math.ceil(target * WS_SEED_UNHEALTHY_BELOW / WS_SEED_TARGET)
    return healthy, unhealthy_below


def websocket_status(healthy_connections: int, target: int) -> Status:
    """WebSocket component: >= 140/150 healthy, 100-139 degraded, < 100 unhealthy (scaled to the target)."""
    healthy_at, unhealthy_below = ws_thresholds(target)
    if healthy_connections < unhealthy_below:
        return "unhealthy"
    if healthy_connections < healthy_at:
        return "degraded"
    return "healthy"


def registry_status(markets: int) -> Status:
    """Market registry: > 0 markets healthy, 0 unhealthy."""
    return "healthy" if markets > 0 else "unhealthy"


def gatherers_status(connected: int, total: int = 3) -> Status:
    """Deduplicator's gatherer count: all connected healthy, some degraded, none unhealthy."""
    if connected <= 0:
        return "unhealthy"
    return "healthy" if connected >= total else "degraded"


def lag_status(max_lag_s: float | None) -> Status:
    """Sync lag: < 5 s healthy, 5-30 s degraded, > 30 s unhealthy (unknown lag counts as healthy)."""
    if max_lag_s is None or max_lag_s < LAG_HEALTHY_S:
        return "healthy"
    if max_lag_s <= LAG_UNHEALTHY_S:
        return "degraded"
    return "unhealthy"


def lag_severity(lag_s: float) -> str:
    """The sync-lag alert severity (docs/runbooks/reading-health.md): normal, warning, critical, emergency."""
    if lag_s < 5:
        return "normal"
    if lag_s < 30:
        return "warning"
    if lag_s < 300:
        return "critical"
    return "emergency"


def coverage_status(
    *, recordable: int, placed: int, unplaced: int, resyncing: int, untrusted_too_long: int, capacity: int
) -> tuple[Status, list[str]]:
    """Coverage component: unhealthy while any recordable market is unplaced or untrusted for longer than
    ``UNTRUSTED_UNHEALTHY_S``; the reasons say why in words an operator can act on."""
    reasons = []
    if unplaced:
        reasons.append(
            f"{unplaced} of {recordable} recordable markets are not subscribed: the order-book capacity is {capacity}"
            " (orderbook_connections x subscriptions_per_connection x markets_per_subscription, less what the"
            " exchange refused with error 26)"
        )
    if untrusted_too_long:
        reasons.append(
            f"{untrusted_too_long} markets have had no trusted book for more than {UNTRUSTED_UNHEALTHY_S:.0f} s"
        )
    return ("unhealthy" if reasons else "healthy"), reasons


# Disk (docs/retention.md): free space of the database's filesystem; defaults of gatherer.disk.*_free_percent.
DISK_WARNING_FREE_PERCENT = 20.0
DISK_CRITICAL_FREE_PERCENT = 10.0
# Retention: a partition held back because it is not merged makes the gatherer degraded once it is this many
# keep windows old (its newest possible row is 2 x keep_days old).
RETENTION_HELD_DEGRADED_FACTOR = 2.0


def disk_status(
    free_percent: float | None,
    warning_free_percent: float = DISK_WARNING_FREE_PERCENT,
    critical_free_percent: float = DISK_CRITICAL_FREE_PERCENT,
) -> Status:
    """Disk component: healthy at or above the warning threshold, degraded below it, unhealthy below the critical
    one. An unknown free space (no way to read it) is healthy: it is reported, not guessed."""
    if free_percent is None or free_percent >= warning_free_percent:
        return "healthy"
    if free_percent >= critical_free_percent:
        return "degraded"
    return "unhealthy"


def retention_status(oldest_held_age_s: float | None, keep_days: float) -> Status:
    """Retention component: degraded once a partition held back (not merged) is 2 x keep_days old, else healthy."""
    if oldest_held_age_s is None:
        return "healthy"
    limit_s = RETENTION_HELD_DEGRADED_FACTOR * keep_days * 86_400
    return "degraded" if oldest_held_age_s >= limit_s else "healthy"


@dataclass
class HealthReport:
    """A service's health: overall status plus its component JSON."""

    status: Status
    components: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def http_code(self) -> int:
        return http_code(self.status)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status, "components": self.components}
        if self.details:
            out["details"] = self.details
        return out


def gatherer_health(
    *,
    db_connected: bool,
    db_ping_ms: float | None,
    ws_connections: int,
    ws_healthy: int,
    ws_target: int,
    markets: int,
    buffer_full: bool = False,
    coverage: dict[str, int] | None = None,
) -> HealthReport:
    """The gatherer's /health (docs/runbooks/reading-health.md, "Gatherer"), plus a degraded status while a writer
    buffer is full and the coverage component (``coverage``: recordable, placed, unplaced, resyncing,
    untrusted_too_long, capacity)."""
    db = gatherer_db_status(db_connected, db_ping_ms)
    ws = websocket_status(ws_healthy, ws_target)
    reg = registry_status(markets)
    cov, reasons = coverage_status(**coverage) if coverage is not None else ("healthy", [])
    status = worst(db, ws, reg, cov, "degraded" if buffer_full else "healthy")
    components = {
        "timescaledb": "connected" if db_connected else "disconnected",
        "websocket": {"connections": ws_connections, "healthy": ws_healthy},
        "market_registry": {"markets": markets},
    }
    details = {
        "timescaledb": {"status": db, "ping_ms": None if db_ping_ms is None else round(db_ping_ms, 3)},
        "websocket": {"status": ws, "target": ws_target},
        "market_registry": {"status": reg},
        "buffer_full": buffer_full,
    }
    if coverage is not None:
        components["coverage"] = dict(coverage)
        details["coverage"] = {"status": cov, "reasons": reasons}
    return HealthReport(status, components, details)


def dedup_health(
    *,
    production_connected: bool,
    production_ping_ms: float | None,
    gatherers: dict[str, bool],
    max_lag_s: float | None,
    tables_syncing: int,
) -> HealthReport:
    """The deduplicator's /health (docs/runbooks/reading-health.md, "Deduplicator")."""
    prod = production_db_status(production_connected, production_ping_ms)
    connected = sum(1 for ok in gatherers.values() if ok)
    gat = gatherers_status(connected, len(gatherers) or 3)
    lag = lag_status(max_lag_s)
    components = {
        "production_rds": "connected" if production_connected else "disconnected",
        "gatherers": {name: "connected" if ok else "disconnected" for name, ok in gatherers.items()},
        "sync": {
            "max_lag_seconds": None if max_lag_s is None else round(max_lag_s, 3),
            "tables_syncing": tables_syncing,
        },
    }
    details = {
        "production_rds": {
            "status": prod,
            "ping_ms": None if production_ping_ms is None else round(production_ping_ms, 3),
        },
        "gatherers": {"status": gat, "connected": connected},
        "sync": {"status": lag, "severity": lag_severity(max_lag_s or 0.0)},
    }
    return HealthReport(worst(prod, gat, lag), components, details)
