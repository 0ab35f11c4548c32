"""Prometheus metrics of one deduplicator (its own CollectorRegistry, so several can live in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class DedupMetrics:
    """Lag per gatherer x table, rows merged, duplicates absorbed, gap-trust decisions, market sync."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ("gatherer", "table")
        self.lag = Gauge(
            "kalshi_dedup_sync_lag_seconds",
            "now - gatherer clock of the oldest committed row not yet merged (0 when caught up)",
            labels,
            registry=self.registry,
        )
        self.rows_read = Counter("kalshi_dedup_rows_read", "rows read from gatherers", labels, registry=self.registry)
        self.rows_merged = Counter(
            "kalshi_dedup_rows_merged", "rows inserted into production", labels, registry=self.registry
        )
        self.duplicates = Counter(
            "kalshi_dedup_duplicates_absorbed",
            "rows already in production (ON CONFLICT)",
            labels,
            registry=self.registry,
        )
        self.batches = Counter("kalshi_dedup_batches", "merge transactions", labels, registry=self.registry)
        self.errors = Counter("kalshi_dedup_loop_errors", "sync loop errors", labels, registry=self.registry)
        self.gap_trust = Counter(
            "kalshi_dedup_gap_trust_rows",
            "suspect order-book deltas by decision (witnessed, unwitnessed, rejected)",
            ("gatherer", "decision"),
            registry=self.registry,
        )
        self.production_ping = Gauge(
            "kalshi_dedup_production_ping_seconds",
            "production database ping round trip measured by /health (NaN while disconnected)",
            registry=self.registry,
        )
        self.gatherer_connected = Gauge(
            "kalshi_dedup_gatherer_connected",
            "1 if the gatherer database answers",
            ("gatherer",),
            registry=self.registry,
        )
        self.market_sync_rows = Counter(
            "kalshi_dedup_market_sync_rows", "series/events/markets upserted", ("kind",), registry=self.registry
        )
        self.market_sync_errors = Counter(
            "kalshi_dedup_market_sync_errors", "failed market sync passes", registry=self.registry
        )
