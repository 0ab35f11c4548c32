"""Counters of what the exchange did, served by ``GET /_sim/stats``."""

from __future__ import annotations

from collections import Counter


class Stats:
    """Plain counters; the fault counts live in the FaultInjector and are merged in :meth:`as_dict`."""

    def __init__(self) -> None:
        self.events: Counter[str] = Counter()  # exchange events emitted, by ground-truth kind
        self.messages: Counter[str] = Counter()  # WS frames queued to clients, by message type
        self.rest: Counter[str] = Counter()  # REST answers by status code / reason
        self.connections_open = 0
        self.connections_total = 0
        self.connections_refused = 0
        self.auth_rejected = 0
        self.buffer_overflows = 0
        self.pings = 0

    def as_dict(self, faults: dict[str, int], extra: dict | None = None) -> dict:
        """JSON-ready snapshot."""
        d = {
            "events": dict(self.events),
            "messages": dict(self.messages),
            "faults": dict(faults),
            "rest": dict(self.rest),
            "connections": {
                "open": self.connections_open,
                "total": self.connections_total,
                "refused": self.connections_refused,
                "auth_rejected": self.auth_rejected,
                "buffer_overflows": self.buffer_overflows,
            },
            "pings": self.pings,
        }
        if extra:
            d.update(extra)
        return d
