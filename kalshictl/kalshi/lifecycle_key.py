"""The lifecycle dedup key (issue #16 item 3): a digest of the canonical content plus a time never in the future.

Kalshi's ``market_lifecycle_v2`` messages carry no message time (``deactivated`` and ``metadata_updated`` carry no time
at all; ``created``/``activated`` carry ``open_ts``/``close_ts``, the close in the future). So a lifecycle row is
identified by

* ``digest`` = SHA-256 of the canonical content: ``event_type``, ``ticker`` and the payload as JSON with sorted keys
  (the same on every gatherer for the same message), and
* ``exchange_ts`` = the message's own time when it has one, else the gatherer's receive time — and never later than
  the receive time (a future time would move coverage clocks forward and collide with later events).

* ``occurrence`` = the rank of the message among identical ones (same ticker, event type and digest) that follow each
  other within the tolerance on this gatherer's stream: 0, 1, 2 … (:class:`Occurrences`). Kalshi repeats
  ``deactivated``/``metadata_updated`` with identical content, sometimes within a second; the k-th copy on every
  gatherer is the same event, as with identical order-book deltas.

Production treats rows with the same ``(ticker, event_type, digest, occurrence)`` as one event when their times are
equal (the message's own time) or, for receive-time stamps (``exchange_ts = received_at``), lie within a tolerance
(default 60 s) (:func:`kalshictl.dedup.merge.lifecycle_insert_sql`); a market's second ``deactivated`` minutes later
is a second event (occurrence 0 again, at another time), and one 0.2 s later is occurrence 1.
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
