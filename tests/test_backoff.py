"""kalshictl/backoff.py: the delays of each jitter stay in their bounds, and retry_until stops on success, on stop
and on a fatal error."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from kalshictl.backoff import Backoff, Jitter, retry_until


def _first(backoff: Backoff, n: int) -> list[float]:
    return list(itertools.islice(backoff.delays(), n))


def test_delays_double_to_the_cap_without_jitter() -> None:
    assert _first(Backoff(0.5, 30.0), 8) == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert _first(Backoff(0.05, 5.0), 9)[-3:] == [3.2, 5.0, 5.0]


@pytest.mark.parametrize(
    ("jitter", "low", "high"),
    [(Jitter.HALF, 0.5, 1.0), (Jitter.SPREAD, 0.5, 1.5)],
)
def test_multiplicative_jitter_stays_within_its_factor_of_the_capped_delay(
    jitter: Jitter, low: float, high: float
) -> None:
    for _ in range(200):
        for n, d in enumerate(_first(Backoff(1.0, 60.0, jitter), 9), start=1):
            base = min(60.0, 2.0 ** (n - 1))
            assert base * low - 1e-9 <= d <= base * high + 1e-9, (n, d)
    spread = {round(d, 6) for d in _first(Backoff(1.0, 60.0, jitter), 40)}
    assert len(spread) > 10  # jittered, not constant


def test_full_jitter_spans_zero_to_the_delay_over_a_floor() -> None:
    seen = [d for _ in range(300) for d in _first(Backoff(1.0, 8.0, Jitter.FULL), 6)]
    assert min(seen) >= 0.1
    assert max(seen) <= 8.1
    assert min(seen) < 0.3 and max(seen) > 7.0  # the whole range is used


async def test_retry_until_retries_then_succeeds() -> None:
    calls: list[int] = []
    failures: list[tuple[str, float]] = []

    async def attempt() -> None:
        calls.append(1)
        if len(calls) < 3:
            raise OSError(f"down {len(calls)}")

    ok = await retry_until(
        attempt, asyncio.Event(), Backoff(0.01, 0.02), on_failure=lambda e, d: failures.append((str(e), d))
    )
    assert ok and len(calls) == 3
    assert failures == [("down 1", 0.01), ("down 2", 0.02)]


async def test_retry_until_returns_false_when_stopped_during_a_wait() -> None:
    stop = asyncio.Event()
    calls = 0

    async def attempt() -> None:
        nonlocal calls
        calls += 1
        asyncio.get_running_loop().call_later(0.05, stop.set)
        raise OSError("down")

    started = asyncio.get_running_loop().time()
    assert not await retry_until(attempt, stop, Backoff(60.0, 60.0))
    assert calls == 1  # no attempt after the stop
    assert asyncio.get_running_loop().time() - started < 30  # woke at the stop, not after the 60 s delay


async def test_retry_until_raises_a_fatal_error_at_once() -> None:
    class Rejected(Exception):
        pass

    async def attempt() -> None:
        raise Rejected

    with pytest.raises(Rejected):
        await retry_until(attempt, asyncio.Event(), Backoff(0.01, 0.01), fatal=(Rejected,))
