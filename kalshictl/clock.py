"""The one clock every time-based policy reads, and the way a test or the soak runs it faster than wall time.

Three clocks share one interface (:class:`Clock`):

* :class:`WallClock` — the real time; the default.
* :class:`ScaledClock` — ``start + (wall - anchor) × rate``: simulated time runs ``rate`` times faster than wall
  time from a start instant fixed at a wall instant (the anchor). Every process given the same anchor, start and rate
  reads the same simulated time, so the subprocesses of a local pipeline agree to the microsecond.
* :class:`ManualClock` — time moves only when a test calls :meth:`ManualClock.advance`; sleepers wake when it passes
  their deadline.

The process-wide clock is chosen once: :func:`install` (tests, the soak's parent process) or the environment variable
``KALSHICTL_CLOCK`` read at import (``rate=3600,start=2026-01-01T00:00:00Z,anchor_us=1765000000000000``; see
:meth:`ScaledClock.to_env` and docs/configuration.md). Module-level :func:`now_us`, :func:`now`,
:func:`monotonic` and :func:`sleep` read it. The hot path's ``received_at`` calls :func:`now_us`: with the wall clock
that is one global test and ``time.time_ns() // 1000``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

ENV_VAR = "KALSHICTL_CLOCK"
US = 1_000_000


class Clock:
    """Now in µs since the epoch, as a UTC datetime, a monotonic reading in clock seconds, and an async sleep."""

    rate: float = 1.0

    def now_us(self) -> int:
        raise NotImplementedError

    def now(self) -> datetime:
        """Now as an aware UTC datetime."""
        return datetime.fromtimestamp(self.now_us() / US, tz=UTC)

    def monotonic(self) -> float:
        """Seconds of clock time from an arbitrary origin; never goes back (for intervals and deadlines)."""
        raise NotImplementedError

    async def sleep(self, seconds: float, stop: asyncio.Event | None = None) -> bool:
        """Sleep ``seconds`` of clock time; return True at once if ``stop`` is set (before or during the sleep)."""
        wall = max(0.0, seconds) / self.rate
        if stop is None:
            await asyncio.sleep(wall)
            return False
        if stop.is_set():
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), wall)
        return stop.is_set()

    def to_env(self) -> str | None:
        """The ``KALSHICTL_CLOCK`` value that makes a subprocess read this clock (None: the wall clock)."""
        return None


class WallClock(Clock):
    """Real time."""

    def now_us(self) -> int:
        return time.time_ns() // 1_000

    def monotonic(self) -> float:
        return time.monotonic()


class ScaledClock(Clock):
    """Simulated time ``start_us + (wall_us - anchor_us) × rate``; ``rate`` 3600 runs a day in 24 wall minutes."""

    def __init__(self, rate: float, start_us: int | None = None, anchor_us: int | None = None) -> None:
        if not rate > 0:
            raise ValueError(f"clock rate must be > 0, got {rate!r}")
        self.rate = float(rate)
        self.anchor_us = time.time_ns() // 1_000 if anchor_us is None else int(anchor_us)
        self.start_us = self.anchor_us if start_us is None else int(start_us)
        # monotonic origin: the wall monotonic reading at the anchor (so intervals survive wall-clock steps)
        self._mono_origin = time.monotonic() - (time.time_ns() // 1_000 - self.anchor_us) / US

    def now_us(self) -> int:
        return self.start_us + int((time.time_ns() // 1_000 - self.anchor_us) * self.rate)

    def monotonic(self) -> float:
        return (time.monotonic() - self._mono_origin) * self.rate

    def to_env(self) -> str:
        return f"rate={self.rate:g},start_us={self.start_us},anchor_us={self.anchor_us}"

    @classmethod
    def from_env(cls, text: str) -> ScaledClock:
        """Parse ``rate=R[,start=ISO|start_us=N][,anchor_us=N]`` (errors name the bad key)."""
        fields: dict[str, str] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, sep, value = part.partition("=")
            if not sep:
                raise ValueError(f"{ENV_VAR}: expected key=value, got {part!r}")
            fields[key.strip()] = value.strip()
        unknown = set(fields) - {"rate", "start", "start_us", "anchor_us"}
        if unknown:
            raise ValueError(f"{ENV_VAR}: unknown key(s) {sorted(unknown)} (rate, start, start_us, anchor_us)")
        if "rate" not in fields:
            raise ValueError(f"{ENV_VAR}: 'rate' is required")
        try:
            rate = float(fields["rate"])
            start_us = int(fields["start_us"]) if "start_us" in fields else None
            if "start" in fields:
                dt = datetime.fromisoformat(fields["start"].replace("Z", "+00:00"))
                start_us = int((dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp() * US)
            anchor_us = int(fields["anchor_us"]) if "anchor_us" in fields else None
        except ValueError as e:
            raise ValueError(f"{ENV_VAR}: {e}") from None
        return cls(rate, start_us, anchor_us)


class ManualClock(Clock):
    """Time that moves only by :meth:`advance` (or :meth:`set`); a sleeper wakes once time passes its deadline."""

    def __init__(self, start_us: int = 0) -> None:
        self._now_us = int(start_us)
        self._origin_us = int(start_us)
        self._sleepers: list[tuple[int, asyncio.Future[None]]] = []

    def now_us(self) -> int:
        return self._now_us

    def monotonic(self) -> float:
        return (self._now_us - self._origin_us) / US

    @property
    def sleepers(self) -> int:
        """How many tasks sleep on this clock now (a test waits for a timer to be idle again)."""
        return len(self._sleepers)

    async def advance(self, seconds: float) -> None:
        """Move time forward and let every sleeper whose deadline passed run."""
        await self.set(self._now_us + int(seconds * US))

    async def set(self, now_us: int) -> None:
        if now_us < self._now_us:
            raise ValueError("a ManualClock never goes back")
        self._now_us = int(now_us)
        due = [f for deadline, f in self._sleepers if deadline <= self._now_us]
        self._sleepers = [(d, f) for d, f in self._sleepers if d > self._now_us]
        for fut in due:
            if not fut.done():
                fut.set_result(None)
        for _ in range(3):  # let woken sleepers run (and re-arm) before the caller continues
            await asyncio.sleep(0)

    async def sleep(self, seconds: float, stop: asyncio.Event | None = None) -> bool:
        if stop is not None and stop.is_set():
            return True
        deadline = self._now_us + int(max(0.0, seconds) * US)
        if deadline <= self._now_us:
            await asyncio.sleep(0)
            return stop is not None and stop.is_set()
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((deadline, woken))
        waits: set[asyncio.Future[Any]] = {woken}  # only completion matters: woken is None, stopped True
        stopped = asyncio.ensure_future(stop.wait()) if stop is not None else None
        if stopped is not None:
            waits.add(stopped)
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if stopped is not None:
                stopped.cancel()
            self._sleepers = [(d, f) for d, f in self._sleepers if f is not woken]
            woken.cancel()
        return stop is not None and stop.is_set()


def _from_environment() -> Clock:
    text = os.environ.get(ENV_VAR, "").strip()
    return ScaledClock.from_env(text) if text else WallClock()


_clock: Clock = _from_environment()
_wall = isinstance(_clock, WallClock)


def current() -> Clock:
    """The process-wide clock."""
    return _clock


def install(clock: Clock) -> Clock:
    """Make ``clock`` the process-wide clock; return the previous one."""
    global _clock, _wall
    previous, _clock, _wall = _clock, clock, type(clock) is WallClock
    return previous


@contextlib.contextmanager
def installed(clock: Clock) -> Iterator[Clock]:
    """Use ``clock`` inside a ``with`` block (tests), then put the previous clock back."""
    previous = install(clock)
    try:
        yield clock
    finally:
        install(previous)


def now_us() -> int:
    """Now in the pipeline's time unit, µs since the epoch, on the process-wide clock."""
    if _wall:
        return time.time_ns() // 1_000
    return _clock.now_us()


def now() -> datetime:
    """Now as an aware UTC datetime on the process-wide clock."""
    return _clock.now()


def monotonic() -> float:
    """Seconds of process-wide clock time from an arbitrary origin; never goes back."""
    return _clock.monotonic()


async def sleep(seconds: float, stop: asyncio.Event | None = None) -> bool:
    """Sleep ``seconds`` of clock time, waking early (True) when ``stop`` is set."""
    return await _clock.sleep(seconds, stop)


def child_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's) with ``KALSHICTL_CLOCK`` set so a subprocess shares this clock."""
    out = dict(os.environ if env is None else env)
    value = _clock.to_env()
    if value is None:
        out.pop(ENV_VAR, None)
    else:
        out[ENV_VAR] = value
    return out
