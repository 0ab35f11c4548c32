"""Exponential backoff: the one home of the delays between retries and of "retry until it succeeds or stop is set".

A :class:`Backoff` is a first delay, a cap and a :class:`Jitter`; its delays double from ``first`` up to ``cap``
(attempt *n* waits ``min(cap, first × 2ⁿ⁻¹)``, jittered) and are computed by tenacity's wait strategies. A loop that
resets its backoff after a success takes a fresh :meth:`Backoff.delays` iterator.

Waits are in **wall time** (:data:`WALL`, the wall clock's stoppable sleep, kalshictl/clock.py): a reconnect or a
retry paces the load put on a database or the exchange, which does not run faster under the soak's scaled clock
(docs/configuration.md), so a scaled clock never turns a backoff into a reconnect storm.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from enum import Enum

from tenacity import AsyncRetrying, RetryCallState, wait_exponential, wait_fixed, wait_random_exponential
from tenacity.wait import wait_base

from kalshictl.clock import WallClock

log = logging.getLogger("kalshictl.backoff")

StoppableSleep = Callable[[float, asyncio.Event], Awaitable[bool]]
WALL: StoppableSleep = WallClock().sleep  # sleep seconds of wall time; True at once when stop is set


class Jitter(Enum):
    """How a delay ``d`` (``min(cap, first × 2ⁿ⁻¹)``) is randomised."""

    NONE = "d"
    HALF = "d × U(0.5, 1)"  # never longer than the cap, never shorter than half the delay
    SPREAD = "d × U(0.5, 1.5)"
    FULL = "U(0, d) + first / 10"  # full jitter over a floor (reconnects of many sockets spread out)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays that double from ``first`` to ``cap`` seconds, jittered."""

    first: float
    cap: float
    jitter: Jitter = Jitter.NONE

    def wait(self) -> wait_base:
        """The delays as one of tenacity's wait strategies."""
        first, cap = self.first, self.cap
        match self.jitter:
            case Jitter.NONE:
                return wait_exponential(multiplier=first, max=cap)
            case Jitter.HALF:  # d/2 + U(0, d/2)
                return wait_exponential(multiplier=first / 2, max=cap / 2) + wait_random_exponential(
                    multiplier=first / 2, max=cap / 2
                )
            case Jitter.SPREAD:  # d/2 + U(0, d)
                return wait_exponential(multiplier=first / 2, max=cap / 2) + wait_random_exponential(
                    multiplier=first, max=cap
                )
            case Jitter.FULL:
                return wait_random_exponential(multiplier=first, max=cap) + wait_fixed(first * 0.1)

    def delays(self) -> Iterator[float]:
        """The delay before each retry, without end (attempt 1, 2, …)."""
        wait = self.wait()
        state = RetryCallState(_RETRYING, None, (), {})
        for n in itertools.count(1):
            state.attempt_number = n
            yield wait(state)


_RETRYING = AsyncRetrying()  # the retry object a RetryCallState names (unused by the wait strategies)


async def retry_until(
    attempt: Callable[[], Awaitable[object]],
    stop: asyncio.Event,
    backoff: Backoff,
    *,
    fatal: tuple[type[BaseException], ...] = (),
    on_failure: Callable[[Exception, float], None] | None = None,
    sleep: StoppableSleep = WALL,
) -> bool:
    """Await ``attempt()`` until it returns without raising (True) or ``stop`` is set (False).

    A failure is reported to ``on_failure(exc, delay)`` and retried after the next delay of ``backoff``; exceptions
    of a ``fatal`` type are raised at once (no retry can fix them)."""
    delays = backoff.delays()
    while not stop.is_set():
        try:
            await attempt()
        except fatal:
            raise
        except Exception as exc:
            delay = next(delays)
            if on_failure is not None:
                on_failure(exc, delay)
            if await sleep(delay, stop):
                return False
            continue
        return True
    return False
