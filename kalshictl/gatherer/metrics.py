"""Prometheus metrics of one gatherer instance, in its own CollectorRegistry (several gatherers per process work)."""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric


class MessageCounts(dict[str, int]):
    """Frames received per message type, counted in plain ints on the hot path (``counts[type] += 1``: no lock, no
    method call); :class:`MessagesCollector` publishes them when the registry is scraped. A type appears the first
    time it is counted (as a labelled :class:`~prometheus_client.Counter` did), with its ``_created`` time."""

    def __init__(self) -> None:
        super().__init__()
        self.created: dict[str, float] = {}

    def __missing__(self, mtype: str) -> int:
        self.created[mtype] = time.time()
        return 0


class MessagesCollector:
    """The counter ``kalshi_gatherer_messages_total{type}``, read from :class:`MessageCounts` at scrape time."""

    name = "kalshi_gatherer_messages"
    documentation = "WS frames received by type"

    def __init__(self, registry: CollectorRegistry) -> None:
        self.counts = MessageCounts()
        registry.register(self)

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self.name, self.documentation, labels=["type"])

    def collect(self) -> Iterator[Metric]:
        fam = CounterMetricFamily(self.name, self.documentation, labels=["type"])
        created = self.counts.created
        for mtype, n in list(self.counts.items()):
            fam.add_metric([mtype], float(n), created=created.get(mtype))
        yield fam


class GathererMetrics:
    """All gatherer metrics; labels carry the message type / table / reason."""

    def __init__(self, gatherer: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.messages = MessagesCollector(r)  # the router counts into messages.counts; read at scrape time
        self.parse_errors = Counter("kalshi_gatherer_parse_errors", "Frames that failed to parse", ["kind"], registry=r)
        self.unknown_fields = Counter("kalshi_gatherer_unknown_fields", "Unknown message fields seen", registry=r)
        self.duplicates = Counter("kalshi_gatherer_duplicate_frames", "Frames dropped as duplicates", registry=r)
        self.stray_frames = Counter(
            "kalshi_gatherer_stray_frames",
            "Order-book frames of a market dropped because they came from a sid it is not placed on",
            registry=r,
        )
        self.rows = Counter("kalshi_gatherer_rows_written", "Rows committed per table", ["table"], registry=r)
        self.batch_latency = Histogram(
            "kalshi_gatherer_batch_seconds",
            "Batch write latency",
            ["table"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.commit_lag = Histogram(
            "kalshi_gatherer_receive_to_commit_seconds",
            "Receive-to-commit latency of the oldest row in a batch",
            ["table"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.gaps = Counter("kalshi_gatherer_gaps", "Recorded sequence gaps / disconnects", ["reason"], registry=r)
        self.reconnects = Counter("kalshi_gatherer_reconnects", "WebSocket reconnects", registry=r)
        self.buffer_depth = Gauge("kalshi_gatherer_buffer_rows", "Rows buffered per table", ["table"], registry=r)
        self.overflow = Counter(
            "kalshi_gatherer_overflow_rows", "Rows dropped beyond the buffer bound", ["table"], registry=r
        )
        self.rejected = Counter("kalshi_gatherer_rejected_rows", "Rows the database refused", ["table"], registry=r)
        self.write_errors = Counter("kalshi_gatherer_write_errors", "Failed batch writes", ["table"], registry=r)
        self.connections = Gauge("kalshi_gatherer_ws_connections", "WebSocket connections", ["state"], registry=r)
        self.markets = Gauge("kalshi_gatherer_markets", "Markets in the registry", registry=r)
        self.resnapshots = Counter("kalshi_gatherer_resnapshots", "Markets re-snapshotted after a gap", registry=r)
        self.rest_requests = Gauge("kalshi_gatherer_rest_requests", "REST requests made", registry=r)
        self.rest_throttled = Gauge("kalshi_gatherer_rest_throttled", "REST 429 answers", registry=r)
        self.db_ping = Gauge(
            "kalshi_gatherer_db_ping_seconds", "Local database ping round trip (NaN while disconnected)", registry=r
        )
        self.db_connected = Gauge("kalshi_gatherer_db_connected", "1 if the local database answers", registry=r)
        self.commands = Counter("kalshi_gatherer_ws_commands", "WebSocket commands sent", ["cmd"], registry=r)
        self.commands_last_minute = Gauge(
            "kalshi_gatherer_ws_commands_last_minute",
            "Commands sent in the last minute (max over connections)",
            registry=r,
        )
        self.coverage = Gauge(
            "kalshi_gatherer_order_book_markets", "Order-book markets by state", ["state"], registry=r
        )  # placed / unplaced / resyncing / untrusted_too_long
        self.capacity = Gauge("kalshi_gatherer_order_book_capacity", "Markets the layout can hold", registry=r)
        self.subscriptions = Gauge("kalshi_gatherer_order_book_subscriptions", "Order-book subscriptions", registry=r)
        self.tail_gaps = Counter(
            "kalshi_gatherer_tail_gaps", "Losses found by a seq probe or a book digest", ["how"], registry=r
        )
        self.info = Gauge("kalshi_gatherer_info", "Gatherer identity", ["name"], registry=r)
        self.info.labels(name=gatherer).set(1)
