"""The lifecycle dedup key: a digest of the canonical content plus a time never in the future (docs/deduplicator.md,
"lifecycle events").

Kalshi's ``market_lifecycle_v2`` messages carry no message time (``deactivated`` and ``metadata_updated`` carry no time
at all; ``created``/``activated`` carry ``open_ts``/``close_ts``, the close in the future). So a lifecycle row is
identified by

* ``digest`` = SHA-256 of the canonical content: ``event_type``, ``ticker`` and the payload as JSON with sorted keys
  (the same on every gatherer for the same message), and
* ``exchange_ts`` = the message's own time when it has one, else the gatherer's receive time — and never later than
  the receive time (a future time would move coverage clocks forward and collide with later events).

* ``occurrence`` = the rank of the message among identical ones (same ticker, event type and digest) that follow each
  other within :data:`DEFAULT_TOLERANCE_US` on this gatherer's stream: 0, 1, 2 … (:class:`Occurrences`). It keeps
  a gatherer's rows unique (Kalshi repeats ``deactivated``/``metadata_updated`` with identical content, sometimes
  within a second) and is not an identity across gatherers: a gatherer restarted between two repeats numbers them
  differently from its peers.

Production stores one row per exchange message by remembering which gatherer copy each event absorbed
(:mod:`kalshictl.dedup.lifecycle_merge`): a copy matches an event of the same key at the same own time, or within a
few seconds of receive time, that no other copy of the same gatherer has claimed.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

DEFAULT_TOLERANCE_US = 60_000_000


def digest(event_type: str, ticker: str, payload: dict[str, Any]) -> bytes:
    """SHA-256 of the canonical content (event type, ticker, payload with sorted keys)."""
    canon = orjson.dumps({"event_type": event_type, "payload": payload, "ticker": ticker}, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canon).digest()


def event_time(own_us: int | None, received_us: int) -> int:
    """The row's ``exchange_ts``: the message's own time if it has one (not after receipt), else the receive time."""
    if not own_us or own_us <= 0:
        return received_us
    return min(own_us, received_us)


def key_fields(event_type: str, ticker: str, payload: dict[str, Any], own_us: int | None, received_us: int) -> tuple:
    """``(exchange_ts, digest)`` of one lifecycle message."""
    return event_time(own_us, received_us), digest(event_type, ticker, payload)


class Occurrences:
    """Numbers identical lifecycle messages of one gatherer's stream: a copy within ``tolerance_us`` of the previous
    identical one continues its burst (occurrence + 1); a later one starts again at 0."""

    def __init__(self, tolerance_us: int = DEFAULT_TOLERANCE_US) -> None:
        self.tolerance_us = tolerance_us
        self._last: dict[tuple[str, str, bytes], tuple[int, int]] = {}  # key -> (receive time, occurrence)

    def next(self, ticker: str, event_type: str, dig: bytes, received_us: int) -> int:
        key = (ticker, event_type, dig)
        prev = self._last.get(key)
        occ = prev[1] + 1 if prev is not None and received_us - prev[0] <= self.tolerance_us else 0
        self._last[key] = (received_us, occ)
        if len(self._last) > 100_000:  # bounded: bursts older than the tolerance can no longer continue
            horizon = received_us - self.tolerance_us
            self._last = {k: v for k, v in self._last.items() if v[0] >= horizon}
        return occ
