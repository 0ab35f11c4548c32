"""Gap windows are data, written when they open (docs/gatherer.md "Gaps are data").

:class:`GapLog` owns the gatherer's ``sequence_gaps`` rows: one row per subscription window (``tickers`` = the
markets it covers, NULL = every market of the channel), keyed by ``(gatherer, instance_id, window_id)`` where
``instance_id`` names this process and ``window_id`` counts its windows.

* :meth:`GapLog.open` is synchronous (the router calls it from the frame path): it assigns the window id, queues the
  INSERT and wakes the log's own :class:`~kalshictl.gatherer.write_loop.WriteLoop` (the loop the table writers use),
  which commits it on its own connection at once (well within ~50 ms on a healthy database; while the database is
  down it retries with backoff and keeps order).
* :meth:`GapLog.close` queues an UPDATE that sets ``to_ts`` (and the recovery state) and bumps ``txid`` so the
  deduplicator's watermark reads the row again and upserts it in production. A close queued before its open was
  written is folded into the INSERT (one write).
* :meth:`GapLog.committed_through_us` is part of the coverage heartbeat (beside the table writers'): the heartbeat
  never claims a time after the start of a window whose INSERT is not committed, so ``kill -9`` at any moment leaves
  either the window or a restart gap covering it.
* :meth:`GapLog.restarted` records the gatherer's own downtime as a ``restart`` window and closes every window a
  previous instance left open at the time coverage resumed.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from kalshictl import clock
from kalshictl.backoff import Backoff
from kalshictl.gatherer.write_loop import Connect, WriteLoop
from kalshictl.schema import GAPS

if TYPE_CHECKING:
    from kalshictl.gatherer.metrics import GathererMetrics

log = logging.getLogger("kalshictl.gatherer.gaps")

RETRY_FIRST_S = 0.02  # a failed write is retried after 0.02 s, 0.04 s, … up to ``retry_max_s`` (wall time)

ALL_CHANNELS = "*"
RECOVERIES = ("none", "pending", "recovered", "failed")
# the table a writer overflowed -> the channel whose data it lost
TABLE_CHANNEL = {
    "trades": "trade",
    "tickers": "ticker",
    "orderbook_deltas": "orderbook_delta",
    "orderbook_snapshots": "orderbook_delta",
    "lifecycle_events": "market_lifecycle_v2",
}

_COLS = GAPS.gatherer_columns  # the gatherer table's window columns (kalshictl/schema.py)
_INSERT = (
    f"INSERT INTO sequence_gaps ({', '.join(_COLS)}) VALUES ({', '.join(['%s'] * len(_COLS))})"
    " ON CONFLICT (gatherer, instance_id, window_id) DO NOTHING"
)
_UPDATE = (
    "UPDATE sequence_gaps SET to_ts = COALESCE(%s, to_ts), recovery = COALESCE(%s, recovery),"
    " txid = pg_current_xact_id() WHERE gatherer = %s AND instance_id = %s AND window_id = %s"
)
# every channel whose data a REST backfill can give back (trades) or re-anchor (tickers, lifecycle)
_CLOSE_PREVIOUS = (
    "UPDATE sequence_gaps SET to_ts = GREATEST(%(at)s, from_ts), txid = pg_current_xact_id(),"
    " recovery = CASE WHEN %(pending)s AND channel = ANY(%(recoverable)s) THEN 'pending' ELSE recovery END"
    " WHERE gatherer = %(g)s AND instance_id <> %(i)s AND to_ts IS NULL"
    " RETURNING instance_id, window_id, channel, tickers, reason, from_ts, to_ts, recovery"
)

_PENDING_PREVIOUS = (
    "SELECT instance_id, window_id, channel, tickers, reason, from_ts, to_ts, recovery FROM sequence_gaps"
    " WHERE gatherer = %(g)s AND instance_id <> %(i)s AND to_ts IS NOT NULL AND recovery = 'pending'"
    " AND to_ts <> %(at)s"
)


@dataclass(slots=True)
class Window:
    """One gap window as this process knows it."""

    instance_id: str
    window_id: int
    channel: str
    reason: str
    from_ts: int
    detected_at: int
    subscription: str | None = None
    sid: int | None = None
    tickers: tuple[str, ...] | None = None
    expected_seq: int | None = None
    received_seq: int | None = None
    to_ts: int | None = None
    recovery: str = "none"

    @property
    def key(self) -> tuple[str, int]:
        return (self.instance_id, self.window_id)

    def as_dict(self) -> dict[str, Any]:
        return {
            "instance_id": self.instance_id,
            "window_id": self.window_id,
            "channel": self.channel,
            "subscription": self.subscription,
            "sid": self.sid,
            "markets": None if self.tickers is None else len(self.tickers),
            "reason": self.reason,
            "from_ts": self.from_ts,
            "to_ts": self.to_ts,
            "recovery": self.recovery,
        }


class Insert(NamedTuple):
    """Queued: write a new window (its state when written, a close queued before included)."""

    window: Window
    queued_at: float  # monotonic, for the open -> commit latency


class Update(NamedTuple):
    """Queued: set a written window's ``to_ts`` and/or recovery (None: unchanged)."""

    key: tuple[str, int]
    to_ts: int | None
    recovery: str | None


class ClosePrevious(NamedTuple):
    """Queued: close the windows previous instances left open, at ``at`` (``pending``: mark them for recovery)."""

    at: int
    pending: bool


Op = Insert | Update | ClosePrevious


class GapLog:
    """The gatherer's gap windows, durable when they open (see module docs)."""

    def __init__(
        self,
        gatherer: str,
        connect: Connect,
        *,
        instance_id: str | None = None,
        metrics: GathererMetrics | None = None,
        retry_max_s: float = 2.0,
        recoverable: Sequence[str] = ("trade", "ticker", "market_lifecycle_v2", ALL_CHANNELS),
        on_closed: Callable[[Window], None] | None = None,
    ) -> None:
        self.gatherer = gatherer
        self.instance_id = instance_id or uuid.uuid4().hex
        self.metrics = metrics
        self.recoverable = list(recoverable)
        self._ids = itertools.count(1)
        self._windows: dict[tuple[str, int], Window] = {}  # open (and closed-but-unwritten) windows of any instance
        self._ops: list[Op] = []  # queued operations, in order
        self._unwritten: dict[tuple[str, int], Window] = {}  # INSERT queued or in flight
        self._inflight = 0  # leading ops of ``_ops`` being written now
        self.on_closed = on_closed  # e.g. schedule a REST backfill
        self.written = 0
        self._loop: WriteLoop[list[Op]] = WriteLoop(GAPS.name, connect, self, Backoff(RETRY_FIRST_S, retry_max_s))
        self.commit_ms: list[float] = []  # last open->commit latencies (bounded), for tests and /status
        self.last_from: dict[str, int] = {}  # channel -> start of the latest window opened on it
        # times before which no loss can still be undetected (the router's seq verification); the heartbeat never
        # claims a later time (the backfill's un-anchored lifecycle windows join it in Parts.committed_through_us)
        self.coverage_floors: list[Callable[[int], int]] = []

    # ----- the API the router and the service call ------------------------------------------------------------
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
        detected_at: int | None = None,
    ) -> int:
        """Open a window (written at once, ``to_ts`` NULL); returns its id."""
        w = Window(
            self.instance_id,
            next(self._ids),
            channel,
            reason,
            from_ts,
            clock.now_us() if detected_at is None else detected_at,
            subscription,
            sid,
            None if tickers is None else tuple(sorted(set(tickers))),
            expected_seq,
            received_seq,
        )
        self._windows[w.key] = w
        self._unwritten[w.key] = w
        self.last_from[channel] = from_ts
        self._ops.append(Insert(w, time.monotonic()))
        if self.metrics is not None:
            self.metrics.gaps.labels(reason=reason).inc()
        self._wake()
        return w.window_id

    def close(self, window_id: int, to_ts: int, *, recovery: str | None = None) -> None:
        """Close one of this instance's windows at ``to_ts`` (and set its recovery state)."""
        self._close((self.instance_id, window_id), to_ts, recovery)

    def set_recovery(self, key: tuple[str, int], recovery: str) -> None:
        """Record a closed window's recovery outcome (``pending`` | ``recovered`` | ``failed``)."""
        self._close(key, None, recovery)

    def record(self, *, to_ts: int, recovery: str | None = None, **kw: Any) -> int:
        """Open and close a window at once (a window known only after the fact, e.g. a buffer overflow)."""
        wid = self.open(**kw)
        self.close(wid, to_ts, recovery=recovery)
        return wid

    def restarted(
        self, down_since: int | None, resumed_at: int, *, recovery: str | None = None, slack_us: int = 1_000_000
    ) -> int | None:
        """Coverage resumed at ``resumed_at``: record ``[down_since - slack, resumed_at]`` as a ``restart`` window
        (every channel, every market) and close the windows previous instances left open at ``resumed_at``.

        ``down_since`` (the heartbeat) is a receive time of this gatherer's clock; an event received just after it
        carries an exchange time slightly before it, hence the clock slack (as for every window started from a
        receive time)."""
        self._ops.append(ClosePrevious(resumed_at, recovery == "pending"))
        wid = None
        if down_since is not None:
            wid = self.record(
                channel=ALL_CHANNELS,
                reason="restart",
                from_ts=min(down_since - slack_us, resumed_at),
                to_ts=resumed_at,
                detected_at=resumed_at,
                recovery=recovery,
            )
        self._wake()
        return wid

    def window(self, window_id: int, instance_id: str | None = None) -> Window | None:
        return self._windows.get((instance_id or self.instance_id, window_id))

    def open_since(self, channels: frozenset[str]) -> int | None:
        """The start of the oldest window still open on one of ``channels`` (None when there is none)."""
        starts = (w.from_ts for w in self._windows.values() if w.to_ts is None and w.channel in channels)
        return min(starts, default=None)

    def open_windows(self) -> list[dict[str, Any]]:
        """Windows still open (for /status)."""
        return [w.as_dict() for w in self._windows.values() if w.to_ts is None]

    # ----- internals ------------------------------------------------------------------------------------------
    def _close(self, key: tuple[str, int], to_ts: int | None, recovery: str | None) -> None:
        if recovery is not None and recovery not in RECOVERIES:
            raise ValueError(f"recovery: {recovery!r}")
        w = self._windows.get(key)
        if w is not None:
            if to_ts is not None:
                w.to_ts = max(to_ts, w.from_ts)
                to_ts = w.to_ts
            if recovery is not None:
                w.recovery = recovery
        queued = self._ops[self._inflight :]
        if w is not None and key in self._unwritten and any(isinstance(op, Insert) and op.window is w for op in queued):
            pass  # the queued INSERT (not yet sent) carries the new state
        else:
            self._ops.append(Update(key, to_ts, recovery))
        if w is not None and w.to_ts is not None and w.recovery not in ("pending",):
            self._windows.pop(key, None)  # settled: nothing more to remember (the row is in the queue/database)
        if w is not None and to_ts is not None and self.on_closed is not None:
            with contextlib.suppress(Exception):
                self.on_closed(w)
        self._wake()

    def _wake(self) -> None:
        self._loop.wake()

    # ----- like a table writer's (flush at shutdown, /status, the heartbeat) ----------------------------------
    def __len__(self) -> int:
        return len(self._ops)

    @property
    def buffered_bytes(self) -> int:
        """Estimated memory of the queued operations (a window record and its tickers each)."""
        return sum(200 + sum(map(len, op.window.tickers or ())) if isinstance(op, Insert) else 100 for op in self._ops)

    def committed_through_us(self, now: int) -> int:
        """A time before which every window opened so far is committed (``now`` when none is pending)."""
        pending = [w.from_ts for w in self._unwritten.values()]
        return min([now, *(floor(now) for floor in self.coverage_floors), *pending])

    def start(self) -> None:
        self._loop.start()

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far is committed; False on timeout."""
        return await self._loop.flush(timeout)

    async def stop(self, timeout: float = 10.0) -> bool:
        """Flush (within ``timeout``), end the loop, close the connection."""
        return await self._loop.stop(timeout)

    @property
    def failures(self) -> int:
        return self._loop.failures

    def stats(self) -> dict[str, Any]:
        """The /status entry, shaped like a table writer's."""
        return {
            "buffered": len(self),
            "buffered_bytes": self.buffered_bytes,
            "written": self.written,
            "dropped": 0,
            "rejected": 0,
            "failures": self._loop.failures,
            "connected": self._loop.connected,
            "last_error": self._loop.last_error,
        }

    # ----- the queue the loop drains (kalshictl/gatherer/write_loop.py) ---------------------------------------
    def due_in(self) -> float:
        return 0.0  # a window is written as soon as it opens

    def take(self) -> list[Op] | None:
        batch = list(self._ops)
        self._inflight = len(batch)
        return batch or None

    async def write(self, batch: list[Op]) -> None:
        await self._write(batch)

    def committed(self, batch: list[Op]) -> None:
        del self._ops[: len(batch)]
        self._inflight = 0
        now = time.monotonic()
        for op in batch:
            if isinstance(op, Insert):
                self._unwritten.pop(op.window.key, None)
                self.commit_ms.append((now - op.queued_at) * 1000)
        del self.commit_ms[:-1000]
        self.written += len(batch)

    def give_back(self, batch: list[Op]) -> None:
        self._inflight = 0  # the operations stay queued, in order

    def failed(self, exc: Exception) -> None:
        pass  # counted and logged by the loop

    def _row(self, w: Window) -> tuple[Any, ...]:
        tickers = None if w.tickers is None else list(w.tickers)
        return (self.gatherer, w.instance_id, w.window_id, w.channel, w.subscription, w.sid, tickers, w.reason,
                w.expected_seq, w.received_seq, w.from_ts, w.to_ts, w.detected_at, w.recovery)  # fmt: skip

    async def _write(self, batch: list[Op]) -> None:
        conn = await self._loop.connection()
        previous: list[Window] = []
        async with conn.transaction():
            async with conn.cursor() as cur:
                inserts: list[tuple[Any, ...]] = []
                for op in batch:
                    if isinstance(op, Insert):
                        inserts.append(self._row(op.window))
                        continue
                    if inserts:
                        await cur.executemany(_INSERT, inserts)
                        inserts = []
                    if isinstance(op, Update):
                        inst, wid = op.key
                        await cur.execute(_UPDATE, (op.to_ts, op.recovery, self.gatherer, inst, wid))
                    else:
                        params = {
                            "at": op.at,
                            "pending": op.pending,
                            "recoverable": self.recoverable,
                            "g": self.gatherer,
                            "i": self.instance_id,
                        }
                        await cur.execute(_CLOSE_PREVIOUS, params)
                        found = await cur.fetchall()
                        await cur.execute(_PENDING_PREVIOUS, params)  # recoveries a previous instance left undone
                        found += await cur.fetchall()
                        for inst, wid, ch, tickers, reason, f, t, rec in found:
                            previous.append(
                                Window(
                                    inst,
                                    wid,
                                    ch,
                                    reason,
                                    f,
                                    op.at,
                                    None,
                                    None,
                                    tickers and tuple(tickers),
                                    to_ts=t,
                                    recovery=rec,
                                )
                            )
                if inserts:
                    await cur.executemany(_INSERT, inserts)
        for w in previous:
            log.warning(
                "%s: closed window %s/%d (%s, %s) left open by a previous instance at %d",
                self.gatherer,
                w.instance_id,
                w.window_id,
                w.channel,
                w.reason,
                w.to_ts,
            )
            if w.recovery == "pending":
                self._windows[w.key] = w
            if self.on_closed is not None:
                with contextlib.suppress(Exception):
                    self.on_closed(w)
