"""The exchange's time is the one clock (kalshictl/clock.py) plus the jumps asked through ``POST /_sim/jump``."""

from __future__ import annotations

import aiohttp

from kalshictl import clock
from kalshictl.sim import SimExchange
from kalshictl.sim.ground_truth import load
from tests.sim.conftest import config

START_US = 1_800_000_000_000_000  # 2027-01-15T08:00:00Z
DAY_MS = 86_400_000


async def test_exchange_time_follows_the_one_clock_and_jumps(http: aiohttp.ClientSession, tmp_path) -> None:
    truth = tmp_path / "truth.jsonl"
    with clock.installed(clock.ScaledClock(rate=1, start_us=START_US)):
        async with SimExchange(config(ground_truth=truth)) as ex:
            ex.step(20)
            async with http.post(f"{ex.base_url}/_sim/jump", params={"seconds": "86400"}) as r:
                assert r.status == 200
                jumped_to = (await r.json())["now_ms"]
            ex.step(20)
            async with http.post(f"{ex.base_url}/_sim/jump", params={"seconds": "-1"}) as r:
                assert r.status == 400
            ex.flush()
    stamps = [int(r["exchange_ts"]) // 1000 for r in load(truth) if "exchange_ts" in r]
    first_day = [t for t in stamps if t < jumped_to]
    second_day = [t for t in stamps if t >= jumped_to]
    assert first_day and second_day
    assert min(first_day) >= START_US // 1000 and max(first_day) < START_US // 1000 + 60_000
    assert START_US // 1000 + DAY_MS <= min(second_day) < START_US // 1000 + DAY_MS + 60_000
