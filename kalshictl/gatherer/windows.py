"""Coverage windows per subscription, and a stand-in for ``GapLog`` until the compact ``sequence_gaps`` lands.

A window opens once per subscription per gap (a seq gap of its sid, a disconnect, an error that ended it) and covers
that subscription's markets. Each market resyncs on its own fresh snapshot; the window closes, once, at the time the
last of its markets resynced (a market that left the subscription counts as resynced). A second gap while the window
is open re-adds its markets to the window instead of opening another.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


class GapLogLike(Protocol):
    """The contract's ``GapLog`` API (kalshictl/gatherer/gaps.py)."""

    def open(
        self,
        *,
        channel: str,
        reason: str,
        from_ts: int,
        subscription: str | None = None,
        sid: int | None = None,
        tickers: Sequence[str] | None = None,
        expected_seq: int | None = None,
        received_seq: int | None = None,
    ) -> int: ...

    def close(self, window_id: int, to_ts: int, *, recovery: str | None = None) -> None: ...

    def open_windows(self) -> list[Any]: ...


@dataclass
class _Open:
    window_id: int
    channel: str
    reason: str
    from_ts: int
    subscription: str | None
    sid: int | None
    tickers: list[str] | None
    expected_seq: int | None
    received_seq: int | None
    detected_at: int


class LegacyGapLog:
    """``GapLog``'s signature over the existing ``sequence_gaps`` writer (one row per market, written at close).

    Used until the compact table (one row per window) lands; readers of the old shape stay correct because each
    closed window becomes the per-market rows they expect (``ticker`` NULL when the window covers the channel).
    """

    def __init__(self, writer: Any, gatherer: str, now_us: Any, metrics: Any = None) -> None:
        self.writer = writer
        self.gatherer = gatherer
        self.now_us = now_us
        self.metrics = metrics
        self._ids = itertools.count(1)
        self._open: dict[int, _Open] = {}
        self.opened = 0

    def open(
        self,
        *,
        channel: str,
        reason: str,
        from_ts: int,
        subscription: str | None = None,
        sid: int | None = None,
        tickers: Sequence[str] | None = None,
        expected_seq: int | None = None,
        received_seq: int | None = None,
    ) -> int:
        wid = next(self._ids)
        self._open[wid] = _Open(
            wid,
            channel,
            reason,
            from_ts,
            subscription,
            sid,
            None if tickers is None else list(tickers),
            expected_seq,
            received_seq,
            self.now_us(),
        )
        self.opened += 1
        if self.metrics is not None:
            self.metrics.gaps.labels(reason=reason).inc()
        return wid

    def _write(self, w: _Open, to_ts: int | None) -> None:
        for t in w.tickers if w.tickers is not None else [None]:
            self.writer.add(
                (self.gatherer, w.sid, t, w.reason, w.expected_seq, w.received_seq, w.from_ts, to_ts, w.detected_at)
            )

    def close(self, window_id: int, to_ts: int, *, recovery: str | None = None) -> None:
        w = self._open.pop(window_id, None)
        if w is not None:
            self._write(w, max(to_ts, w.from_ts))

    def open_windows(self) -> list[_Open]:
        return list(self._open.values())

    def shutdown(self) -> None:
        """Write the still-open windows with ``to_ts`` NULL (the next start's restart gap follows them)."""
        for w in self._open.values():
            self._write(w, None)
        self._open.clear()


@dataclass(eq=False)
class Window:
    """One open window of one subscription: the markets still awaiting their snapshot."""

    window_id: int
    reason: str
    awaiting: set[str] = field(default_factory=set)
    last_resync: int = 0
