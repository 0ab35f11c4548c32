"""The one clock (kalshictl/clock.py): wall, scaled (shared by subprocesses through KALSHICTL_CLOCK) and manual."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest

from kalshictl import clock, units
from kalshictl.clock import ENV_VAR, ManualClock, ScaledClock, WallClock


def test_wall_clock_is_the_default_and_units_reads_it():
    assert isinstance(clock.current(), WallClock) or os.environ.get(ENV_VAR)
    before = time.time_ns() // 1000
    got = units.now_us()
    assert before <= got <= time.time_ns() // 1000


def test_scaled_clock_runs_rate_times_faster_from_its_start():
    start = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
    c = ScaledClock(rate=3600, start_us=start)
    t0 = c.now_us()
    assert start <= t0 < start + 3600 * 1_000_000  # less than a wall second has passed since the anchor
    time.sleep(0.05)
    elapsed = c.now_us() - t0
    assert 0.05 * 3600 * 1e6 <= elapsed < 5 * 3600 * 1e6  # ≥ 180 simulated s for 50 wall ms
    assert c.now().tzinfo is UTC


def test_installed_clock_is_what_now_us_reads_and_is_put_back():
    start = 1_767_225_600_000_000
    with clock.installed(ManualClock(start)) as manual:
        assert units.now_us() == start
        assert clock.now() == datetime(2026, 1, 1, tzinfo=UTC)
        asyncio.run(manual.advance(90))
        assert clock.now_us() == start + 90_000_000
        assert clock.monotonic() == 90.0
    assert abs(units.now_us() - time.time_ns() // 1000) < 5_000_000


def test_a_subprocess_given_child_env_reads_the_same_scaled_time():
    start = 1_767_225_600_000_000
    scaled = ScaledClock(rate=1000, start_us=start)
    with clock.installed(scaled):
        env = clock.child_env()
        assert env[ENV_VAR] == scaled.to_env()
        code = "from kalshictl import units; print(units.now_us())"
        before = scaled.now_us()
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        after = scaled.now_us()
    child = int(out.stdout)
    assert before <= child <= after  # same anchor, start and rate: the child's now lies inside our window


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("start_us=1", "'rate' is required"),
        ("rate=10,when=3", "unknown key(s) ['when']"),
        ("rate", "expected key=value"),
        ("rate=0", "rate must be > 0"),
        ("rate=fast", "could not convert"),
    ],
)
def test_bad_environment_values_name_the_bad_key(text, error):
    with pytest.raises(ValueError, match=None) as info:
        ScaledClock.from_env(text)
    assert error in str(info.value)


def test_env_start_accepts_iso():
    c = ScaledClock.from_env("rate=60,start=2026-01-01T00:00:00Z,anchor_us=1000")
    assert (c.rate, c.start_us, c.anchor_us) == (60.0, 1_767_225_600_000_000, 1000)


def test_scaled_sleep_takes_wall_time_divided_by_rate_and_stops_early():
    async def run() -> tuple[float, float, bool]:
        c = ScaledClock(rate=100)
        t = time.monotonic()
        assert await c.sleep(10) is False  # 10 clock s = 0.1 wall s
        slept = time.monotonic() - t
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.05, stop.set)
        t = time.monotonic()
        stopped = await c.sleep(3600, stop)  # 36 wall s unless stopped
        return slept, time.monotonic() - t, stopped

    slept, stopped_after, stopped = asyncio.run(run())
    assert 0.09 <= slept < 5
    assert stopped and stopped_after < 5


def test_manual_sleepers_wake_only_when_time_passes_their_deadline():
    async def run() -> list[str]:
        c = ManualClock(0)
        woke: list[str] = []

        async def sleeper(name: str, s: float) -> None:
            await c.sleep(s)
            woke.append(name)

        tasks = [asyncio.create_task(sleeper("a", 10)), asyncio.create_task(sleeper("b", 30))]
        await asyncio.sleep(0)
        await c.advance(9)
        assert woke == []
        await c.advance(1)
        assert woke == ["a"]
        await c.advance(25)
        assert woke == ["a", "b"]
        stop = asyncio.Event()
        t = asyncio.create_task(c.sleep(1000, stop))
        await asyncio.sleep(0)
        stop.set()
        assert await t is True
        await asyncio.gather(*tasks)
        with pytest.raises(ValueError, match="never goes back"):
            await c.set(0)
        return woke

    assert asyncio.run(run()) == ["a", "b"]
