"""Per-sid sequence tracking, the ack-seq rule, per-market resync and a held-book digest.

* :class:`SeqTracker` classifies each seq-bearing frame of one sid: in order, duplicate (same seq again: dropped),
  gap (seq jumped) or backwards (seq went down). Snapshots may or may not consume a seq (``get_snapshot`` replies
  are not documented either way), so a snapshot carrying the last seq is accepted without advancing.
* :func:`ack_verdict` reads the seq of an ``ok``/``unsubscribed`` ack without being told whether the exchange gives
  acks a seq of their own ("own") or the sid's last data seq ("last"); see docs/gatherer.md "Ack seq".
* :class:`MarketSync` keeps, per market, whether its book is trusted. After a gap, a disconnect or an error that
  ended a subscription, the affected markets await a fresh snapshot: their deltas are not stored until it arrives,
  and afterwards deltas at or before the snapshot's cut time are not stored either (a lost delta in that
  millisecond would make occurrence numbers ambiguous).
* :class:`BookDigest` is a linear hash of every market's held book (one int per market), so any snapshot of a
  trusted market — a ``get_snapshot`` reply or a REST book of a quiet market — shows a frame lost without a trace.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

OK, DUPLICATE, GAP, BACKWARDS, STALE = "ok", "duplicate", "gap", "backwards", "stale"

# Ack-seq readings of one connection: unknown until an ack equal to the last data seq proves "last".
ACK_UNKNOWN, ACK_LAST = "unknown", "last"


class SeqTracker:
    """Seq state of one subscription (sid)."""

    __slots__ = ("last", "sid")

    def __init__(self, sid: int) -> None:
        self.sid = sid
        self.last: int | None = None

    def check(self, seq: int | None) -> str:
        """Classify a data frame's ``seq`` and advance (a gap or backwards seq re-bases on the new value)."""
        if seq is None:
            return OK
        last = self.last
        if last is None or seq == last + 1:
            self.last = seq
            return OK
        if seq == last:
            return DUPLICATE
        self.last = seq
        return GAP if seq > last else BACKWARDS

    def check_snapshot(self, seq: int | None) -> str:
        """A snapshot: like a data frame, except that one carrying the last seq did not consume one (accepted)."""
        if seq is not None and seq == self.last:
            return OK
        return self.check(seq)


def ack_verdict(tracker: SeqTracker, seq: int, mode: str) -> tuple[str, bool, str]:
    """Classify an ack's ``seq`` against the sid's last seq; returns (verdict, ambiguous, mode).

    Under "own" an ack takes seq last+1 (+ lost frames); under "last" it carries last (+ lost frames). So:
    ``seq == last`` is only possible under "last" (and proves it); ``seq > last + 1`` is a loss under both;
    ``seq == last + 1`` is "own" without loss or "last" with one lost tail frame — ambiguous until the connection
    has proven "last" (then it is a gap). The tracker always advances to ``seq``: the next data frame is seq + 1
    under both readings. A seq below last is a stale ack (ordered before data already seen): ignored.
    """
    last = tracker.last
    if last is None:
        tracker.last = seq
        return OK, False, mode
    if seq == last:
        return OK, False, ACK_LAST
    if seq < last:
        return STALE, False, mode
    tracker.last = seq
    if seq == last + 1:
        if mode == ACK_LAST:
            return GAP, False, mode
        return OK, True, mode
    return GAP, False, mode


@dataclass(slots=True)
class OpenGap:
    """What a market's untrusted state can record about its cause (any marker works; the router stores the time)."""

    reason: str
    sid: int | None
    ticker: str | None
    from_ts: int
    detected_at: int
    expected_seq: int | None = None
    received_seq: int | None = None


class MarketSync:
    """Which markets' books are trusted (``awaiting``: ticker -> a marker of when/why it became untrusted, the router
    stores the receive time in µs) and their delta cut-offs."""

    def __init__(self) -> None:
        self.awaiting: dict[str, Any] = {}
        self.cutoff: dict[str, int] = {}  # ticker -> drop deltas with exchange_ts <= this

    def invalidate(self, ticker: str, marker: Any) -> bool:
        """Mark a market untrusted (keeps the earliest marker); returns True if it was trusted."""
        if ticker in self.awaiting:
            return False
        self.awaiting[ticker] = marker
        return True

    def on_snapshot(self, ticker: str, cut_ts: int) -> Any:
        """A fresh snapshot arrived: trust the market again; returns the marker it was awaiting with (or None)."""
        marker = self.awaiting.pop(ticker, None)
        if marker is not None:
            self.cutoff[ticker] = cut_ts
        return marker

    def accept_delta(self, ticker: str, exchange_ts: int) -> bool:
        """Whether a delta of this market may be stored."""
        if ticker in self.awaiting:
            return False
        cut = self.cutoff.get(ticker)
        if cut is None:
            return True
        if exchange_ts <= cut:
            return False
        del self.cutoff[ticker]
        return True

    def forget(self, ticker: str) -> Any:
        """A market left its subscription; returns its marker if it was awaiting a snapshot."""
        self.cutoff.pop(ticker, None)
        return self.awaiting.pop(ticker, None)


# ----- held-book digest -----------------------------------------------------------------------------------------

_P = (1 << 61) - 1  # a Mersenne prime: the digest lives in Z/pZ


def _weight(side: bool, price: int) -> int:
    """A pseudo-random non-zero weight per (side, price) level (splitmix64 finaliser, reduced mod p)."""
    z = ((price << 1) | int(side)) + 0x9E3779B97F4A7C15
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    z ^= z >> 31
    return z % (_P - 1) + 1


def book_digest(yes: list[tuple[int, int]], no: list[tuple[int, int]]) -> int:
    """Digest of a whole book: Σ size × weight(side, price) mod p."""
    h = 0
    for p, s in yes:
        h += s * _weight(True, p)
    for p, s in no:
        h += s * _weight(False, p)
    return h % _P


class BookDigest:
    """The digest of every market's held book, updated by each delta (linear: no level sizes are kept).

    A delta of ``d`` at (side, price) adds ``d × weight``; a level removed reaches size 0 and contributes 0, so the
    held digest equals :func:`book_digest` of the exchange's book exactly when no delta was lost (up to a 2⁻⁶¹
    collision). A market is only comparable while its digest is valid (set by a snapshot, kept by every delta).
    """

    __slots__ = ("_h", "_w")

    def __init__(self) -> None:
        self._h: dict[str, int] = {}
        self._w: dict[tuple[bool, int], int] = {}

    def __contains__(self, ticker: object) -> bool:
        return ticker in self._h

    def __len__(self) -> int:
        return len(self._h)

    def set(self, ticker: str, digest: int) -> None:
        self._h[ticker] = digest

    def get(self, ticker: str) -> int | None:
        return self._h.get(ticker)

    def apply(self, ticker: str, side: bool, price: int, size_delta: int) -> None:
        h = self._h.get(ticker)
        if h is None:
            return
        key = (side, price)
        w = self._w.get(key)
        if w is None:
            w = self._w[key] = _weight(side, price)
        self._h[ticker] = (h + size_delta * w) % _P

    def drop(self, ticker: str) -> None:
        self._h.pop(ticker, None)
