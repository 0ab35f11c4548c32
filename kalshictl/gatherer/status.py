"""What a gatherer reports: order-book coverage, the /health JSON, the operator's /status view and the gauges
refreshed every second (docs/gatherer.md "Health", docs/runbooks/reading-health.md).

Each function reads the gatherer's :class:`~kalshictl.gatherer.parts.Parts`; parts a start-up phase has not built yet
are reported as absent (zero connections, no coverage).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from kalshictl.schema import GAPS
from kalshictl.units import now_us

if TYPE_CHECKING:
    from kalshictl.gatherer.parts import Parts
    from kalshictl.health.thresholds import HealthReport


def coverage(parts: Parts) -> dict[str, int] | None:
    """Order-book coverage: recordable, placed, unplaced, resyncing, untrusted_too_long, capacity, subscriptions."""
    from kalshictl.health.thresholds import UNTRUSTED_UNHEALTHY_S

    sh = parts.shards
    if sh is None:
        return None
    return {
        "recordable": sh.placed + len(sh.unplaced),
        "placed": sh.placed,
        "unplaced": len(sh.unplaced),
        "resyncing": len(parts.router.sync.awaiting),
        "untrusted_too_long": parts.router.untrusted_longer_than(UNTRUSTED_UNHEALTHY_S),
        "capacity": sh.capacity,
        "subscriptions": sum(1 for _ in sh.all_subs()),
    }


async def health(parts: Parts) -> HealthReport:
    """The /health JSON (via gatherer_health), with the coverage component."""
    from kalshictl.health.thresholds import gatherer_health

    mgr = parts.manager
    target = mgr.target if mgr else parts.settings.websocket.connections
    cov = coverage(parts)
    if cov is not None:
        cov = {k: v for k, v in cov.items() if k != "subscriptions"}
    report = gatherer_health(
        db_connected=parts.database.connected,
        db_ping_ms=parts.database.ping_ms,
        ws_connections=mgr.connected_count() if mgr else 0,
        ws_healthy=mgr.healthy_count() if mgr else 0,
        ws_target=target,
        markets=len(parts.registry),
        buffer_full=parts.writers.full,
        coverage=cov,
    )
    report = parts.registry.annotate(report)  # a failed registry load: 503 with the reason
    return parts.storage.annotate(report)  # disk free space and partitions held back by retention


def update_metrics(parts: Parts) -> None:
    """Refresh the gauges that are read rather than counted."""
    m = parts.metrics
    m.markets.set(len(parts.registry))
    if parts.manager is not None:
        m.connections.labels(state="healthy").set(parts.manager.healthy_count())
        m.connections.labels(state="connected").set(parts.manager.connected_count())
        m.commands_last_minute.set(max((c.bucket.last_minute() for c in parts.manager.connections), default=0))
    cov = coverage(parts)
    if cov is not None:
        for k in ("placed", "unplaced", "resyncing", "untrusted_too_long"):
            m.coverage.labels(state=k).set(cov[k])
        m.capacity.set(cov["capacity"])
        m.subscriptions.set(cov["subscriptions"])
    if parts.rest is not None:
        m.rest_requests.set(parts.rest.requests)
        m.rest_throttled.set(parts.rest.throttled)


def status(parts: Parts, *, phase: str, started_at: float) -> dict[str, Any]:
    """Operator view for ``kalshictl gather status``."""
    mgr = parts.manager
    registry = parts.registry
    settings = parts.settings
    msgs = {}
    for metric in parts.metrics.messages.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                msgs[sample.labels["type"]] = int(sample.value)
    last = parts.router.last_exchange_ts
    cov = coverage(parts) or {}
    r = parts.router
    detail = []
    if mgr is not None:
        for c in mgr.connections:
            d = c.status()
            d["healthy"] = mgr.is_healthy(c)
            if c.kind == "orderbook":
                d["ack_mode"] = r.states[c].ack_mode
                d["subscriptions"] = r.sub_status(c)
            else:
                d["channels"] = list(r.states[c].channels)
                d["sids"] = dict(r.states[c].channel_sid)
            detail.append(d)
    per_min = [c.bucket.last_minute() for c in mgr.connections] if mgr else []
    writers = {**parts.writers.stats(), GAPS.name: parts.gaplog.stats()}
    return {
        "name": parts.name,
        "phase": phase,
        "uptime_s": round(time.time() - started_at, 1),
        "registry": {
            "markets": len(registry),
            "load_seconds": registry.load_seconds,
            "pages": registry.pages,
            "refreshes": registry.refreshes,
            "refreshed_at": registry.refreshed_at,
        },
        "coverage": cov,
        "connections": {
            "target": mgr.target if mgr else settings.websocket.connections,
            "connected": mgr.connected_count() if mgr else 0,
            "healthy": mgr.healthy_count() if mgr else 0,
            "reconnects": sum(c.reconnects for c in mgr.connections) if mgr else 0,
            "subscribed_markets": cov.get("placed", 0),
            "unplaced_markets": cov.get("unplaced", 0),
            "commands_last_minute_max": max(per_min, default=0),
            "commands_per_minute_budget": settings.websocket.commands_per_minute,
            "ack_modes": r.ack_modes(),
            "detail": detail,
        },
        "sequence": {
            "tail_gaps": r.stats.tail_gaps,
            "ambiguous_acks": r.stats.ambiguous_acks,
            "digest_mismatches": r.stats.digest_mismatches,
            "rest_suspects": r.stats.rest_suspects,
            "orphan_frames": r.stats.orphan_frames,
            "stray_frames": r.stats.stray_frames,
            "deltas_without_ts": r.stats.no_ts_deltas,
            "open_windows": r.open_windows(),
            "resync_p50_s": r.resync_quantile(0.5),
            "resync_p99_s": r.resync_quantile(0.99),
        },
        "messages": msgs,
        "lag_s": round(max(0.0, (now_us() - last) / 1e6), 3) if last else None,
        "parse_errors": r.stats.parse_errors,
        "duplicates_dropped": r.stats.duplicates,
        "resyncing_markets": len(r.sync.awaiting),
        "gap_windows_open": parts.gaplog.open_windows(),
        "backfill": parts.backfill.status() if parts.backfill else None,
        "writers": writers,
        "buffer_rows": sum(w["buffered"] for w in writers.values()),
        "rest": {
            "requests": parts.rest.requests if parts.rest else 0,
            "throttled": parts.rest.throttled if parts.rest else 0,
        },
        "poller": {"passes": parts.poller.passes, "snapshots": parts.poller.snapshots} if parts.poller else None,
        "database": {"connected": parts.database.connected, "ping_ms": parts.database.ping_ms},
    }
