"""Per-sid sequence tracking and per-market resynchronisation after a gap.

* :class:`SeqTracker` classifies each seq-bearing frame of one subscription: in order, duplicate (same seq again:
  dropped), gap (seq jumped) or backwards (seq went down).
* :class:`MarketSync` keeps, per market, whether its book is trusted. After a gap, a disconnect or an error that
  ended a subscription, the affected markets await a fresh snapshot: their deltas are not stored until it arrives,
  and afterwards deltas at or before the snapshot's cut time are not stored either (a lost delta in that
  millisecond would make occurrence numbers ambiguous). Each such window becomes one ``sequence_gaps`` row per
  market, ``[from_ts, to_ts]`` in microseconds, written when the snapshot closes it.
"""

from __future__ import annotations

from dataclasses import dataclass

OK, DUPLICATE, GAP, BACKWARDS = "ok", "duplicate", "gap", "backwards"


class SeqTracker:
    """Seq state of one subscription (sid)."""

    __slots__ = ("last", "sid")

    def __init__(self, sid: int) -> None:
        self.sid = sid
        self.last: int | None = None

    def check(self, seq: int | None) -> str:
        """Classify ``seq`` and advance (a gap or backwards seq re-bases on the new value)."""
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


@dataclass(slots=True)
class OpenGap:
    """A coverage hole of one market (or of a whole global subscription when ``ticker`` is None)."""

    reason: str
    sid: int | None
    ticker: str | None
    from_ts: int
    detected_at: int
    expected_seq: int | None = None
    received_seq: int | None = None


class MarketSync:
    """Which markets' books are trusted; the windows of those that are not."""

    def __init__(self) -> None:
        self.awaiting: dict[str, OpenGap] = {}  # ticker -> open gap, waiting for a snapshot
        self.cutoff: dict[str, int] = {}  # ticker -> drop deltas with exchange_ts <= this

    def invalidate(self, ticker: str, gap: OpenGap) -> bool:
        """Mark a market untrusted (keeps the earliest open window); returns True if it was trusted."""
        if ticker in self.awaiting:
            return False
        self.awaiting[ticker] = gap
        return True

    def on_snapshot(self, ticker: str, cut_ts: int) -> OpenGap | None:
        """A fresh snapshot arrived: trust the market again; returns the window it closes (if any)."""
        gap = self.awaiting.pop(ticker, None)
        if gap is not None:
            self.cutoff[ticker] = cut_ts
        return gap

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

    def forget(self, ticker: str) -> OpenGap | None:
        """A market left the subscription: returns its still-open window (if any)."""
        self.cutoff.pop(ticker, None)
        return self.awaiting.pop(ticker, None)
