"""The gatherer is correct under every reading of Kalshi's protocol the sim offers, without being told
(docs/gatherer.md "Fidelity: reading Kalshi without being told which Kalshi").

Ack seq "own" vs "last", get_snapshot replies that consume a seq or not, repeat subscribes that merge into one sid or
open a new one: in each, no false gap, no resnapshot storm (a flat command rate), and a lost tail frame is found.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from kalshictl.gatherer.service import Gatherer
from kalshictl.sim import SimConfig, SimExchange
from kalshictl.sim.ground_truth import load
from tests.gatherer.conftest import covered, db_gaps, db_keys, gt_keys, make_settings, probe_all, until

SIM_FIELDS = {f.name for f in dataclasses.fields(SimConfig)}


def sim_config(**kw: Any) -> SimConfig:
    """A SimConfig, skipping the test when this sim does not have a protocol option yet."""
    missing = [k for k in kw if k not in SIM_FIELDS]
    if missing:
        pytest.skip(f"the sim has no option {missing}")
    return SimConfig(**kw)


VARIANTS = [
    pytest.param({"ack_seq": "own", "repeat_subscribe": "merge"}, id="own-merge"),
    pytest.param({"ack_seq": "last", "repeat_subscribe": "new_sid"}, id="last-new_sid"),
    pytest.param({"ack_seq": "own", "repeat_subscribe": "new_sid", "snapshot_seq": "none"}, id="own-new_sid-snapnone"),
    pytest.param({"ack_seq": "last", "repeat_subscribe": "merge", "snapshot_seq": "none"}, id="last-merge-snapnone"),
]

# two subscriptions per connection: repeat subscribes happen on every connection
WS = {"markets_per_subscription": 12, "subscriptions_per_connection": 4, "seq_probe_interval_s": 0.3}


def sub_markets(ex: SimExchange) -> dict[str, int]:
    """Order-book markets per the exchange's own subscription list: ticker -> how many subscriptions hold it."""
    out: dict[str, int] = {}
    for conn in ex.subscriptions():
        for sub in conn["subscriptions"]:
            if sub["channel"] == "orderbook_delta":
                for t in sub["tickers"] or []:
                    out[t] = out.get(t, 0) + 1
    return out


@pytest.mark.parametrize("variant", VARIANTS)
async def test_no_false_gaps_and_a_flat_command_rate(gatherer_dsn: str, variant: dict) -> None:
    cfg = sim_config(markets=60, seed=21, rate=300, paused=True, **variant)
    async with SimExchange(cfg) as ex:
        g = Gatherer(make_settings(gatherer_dsn, ex.rest_url, ex.ws_url, websocket=WS), progress=False)
        task = asyncio.create_task(g.run())
        try:
            assert await g.wait_ready(30)
            await until(lambda: g.manager.healthy_count() == g.manager.target, 15, "all connections subscribed")
            await until(lambda: not g.router.sync.awaiting, 15, "every market's first snapshot")
            assert sum(1 for _ in g.shards.all_subs()) >= 6  # repeat subscribes on every order-book connection
            ex.resume()
            # a get_snapshot round on every subscription mid-stream (its replies may or may not consume seqs)
            await asyncio.sleep(1.0)
            for sub in list(g.shards.all_subs()):
                g.router.request_snapshots(sub, sorted(sub.tickers)[:3])
            await asyncio.sleep(2.0)  # workload duration (the seq probe runs every 0.3 s meanwhile)
            ex.pause()
            ex.flush()
            await probe_all(g)
            truth = gt_keys(load(ex.ground_truth_path))

            def stored_all() -> bool:
                return db_keys(gatherer_dsn)["delta"] == truth["delta"]

            await until(stored_all, 15, "every delta stored")
            status = await g.status()
        finally:
            g.request_stop()
            await asyncio.wait_for(task, 30)
    assert truth["delta"], "the run produced no deltas"
    # no window without a loss (an "outage" window is a market created mid-run, not ours until its first snapshot)
    assert [r for r in db_gaps(gatherer_dsn) if r[1] != "outage"] == [], "a gap window without any loss"
    assert g.router.stats.tail_gaps == 0 and g.router.stats.digest_mismatches == 0
    seq = status["sequence"]
    assert seq["open_windows"] == 0
    # flat command rate: subscribes + ~3 probes a second per sid + the one get_snapshot round, nothing re-sent
    budget = g.settings.websocket.commands_per_minute
    assert 0 < status["connections"]["commands_last_minute_max"] <= budget
    resnapshots = sum(s.value for m in g.metrics.resnapshots.collect() for s in m.samples if s.name.endswith("total"))
    assert resnapshots == 3 * len(list(g.shards.all_subs()))  # only the ones this test asked for
    modes = status["connections"]["ack_modes"]
    if variant["ack_seq"] == "last":
        assert modes == {"last": 3}, modes  # an ack equal to the last data seq proves the reading
    else:
        assert "last" not in modes, modes


@pytest.mark.parametrize("variant", VARIANTS[:2])
async def test_a_single_lost_tail_frame_is_found(gatherer_dsn: str, variant: dict) -> None:
    """One delta lost with nothing after it on its sid: "own" shows it as ack = last + 2, proven "last" as last + 1."""
    cfg = sim_config(markets=20, seed=8, rate=0, paused=True, **variant)
    async with SimExchange(cfg) as ex:
        ws = {**WS, "seq_probe_interval_s": 60.0}
        g = Gatherer(make_settings(gatherer_dsn, ex.rest_url, ex.ws_url, websocket=ws), progress=False)
        task = asyncio.create_task(g.run())
        try:
            assert await g.wait_ready(30)
            await until(lambda: g.manager.healthy_count() == g.manager.target, 15, "all connections subscribed")
            await until(lambda: not g.router.sync.awaiting, 15, "every market's first snapshot")
            await probe_all(g)
            await probe_all(g)
            assert g.router.stats.tail_gaps == 0
            ex.set_faults("skip_seq=1.0")  # order-book frames are lost in transit from now on
            lost: list[dict] = []
            for _ in range(500):  # one exchange action at a time until exactly one delta was emitted (and lost)
                ex.step(1)
                ex.flush()
                lost = [r for r in load(ex.ground_truth_path) if r["kind"] == "delta"]
                if lost:
                    break
            ex.set_faults("")
            assert len(lost) == 1
            await probe_all(g)
            await until(lambda: g.router.stats.tail_gaps > 0, 10, "the probe to reveal the lost frame")
            await until(lambda: not g.router.sync.awaiting, 15, "resnapshots")
            await until(lambda: covered("delta", next(iter(gt_keys(lost)["delta"])), db_gaps(gatherer_dsn)), 10, "gap")
        finally:
            g.request_stop()
            await asyncio.wait_for(task, 30)
    rows = db_gaps(gatherer_dsn)
    market = lost[0]["ticker"]
    sub = next(s for s in g.shards.all_subs() if market in s.tickers)
    # windows of the lost market's sid only (its subscription, and its siblings when subscribes merged), all closed
    same_sid = set().union(*(s.tickers for s in g.shards.all_subs() if s.conn is sub.conn))
    assert rows and all(r[0] is not None and set(r[0]) <= same_sid for r in rows)
    assert all(r[3] is not None for r in rows)


@pytest.mark.parametrize(("repeat", "exchange_cap"), [("new_sid", 40), ("merge", 150)])
async def test_every_market_subscribed_beyond_one_subscriptions_cap(
    gatherer_dsn: str, repeat: str, exchange_cap: int
) -> None:
    """300 markets over 3 order-book connections: the old layout (one subscription a connection, 60 markets) held
    180. Under new_sid with an exchange cap of 40 subscriptions split on error 26 until everything is placed; under
    merge a connection's subscriptions share one sid (capped at 150) and hold 100 each."""
    cfg = sim_config(
        markets=300, seed=31, rate=0, paused=True, max_markets_per_sub=exchange_cap, repeat_subscribe=repeat
    )
    async with SimExchange(cfg) as ex:
        ws = {"markets_per_subscription": 60, "subscriptions_per_connection": 4}
        g = Gatherer(make_settings(gatherer_dsn, ex.rest_url, ex.ws_url, websocket=ws), progress=False)
        task = asyncio.create_task(g.run())
        try:
            assert await g.wait_ready(30)
            wanted = set(g.registry.recordable())
            assert len(wanted) > 3 * 60
            await until(lambda: set(sub_markets(ex)) == wanted, 30, "every market subscribed at the exchange")
            assert set(sub_markets(ex).values()) == {1}  # each in exactly one subscription
            await until(lambda: not g.router.sync.awaiting, 20, "every market's first snapshot")
            assert g.shards.cap <= exchange_cap
            report = await g.health()
            assert report.status == "healthy", report.as_dict()
            assert report.components["coverage"]["unplaced"] == 0
        finally:
            g.request_stop()
            await asyncio.wait_for(task, 30)


async def test_capacity_too_small_is_unhealthy_and_says_why(gatherer_dsn: str) -> None:
    async with SimExchange(SimConfig(markets=150, seed=32, rate=0, paused=True)) as ex:
        ws = {"orderbook_connections": 2, "markets_per_subscription": 25, "subscriptions_per_connection": 2}
        g = Gatherer(make_settings(gatherer_dsn, ex.rest_url, ex.ws_url, websocket=ws), progress=False)
        task = asyncio.create_task(g.run())
        try:
            assert await g.wait_ready(30)
            import httpx

            async with httpx.AsyncClient() as http:
                resp = await http.get(g.health_url)
                status = (await http.get(f"{g.base_url}/status")).json()
                metrics = (await http.get(f"{g.base_url}/metrics")).text
        finally:
            g.request_stop()
            await asyncio.wait_for(task, 30)
    assert resp.status_code == 503
    body = resp.json()
    recordable = body["components"]["coverage"]["recordable"]
    assert body["components"]["coverage"]["placed"] == 100
    assert body["components"]["coverage"]["unplaced"] == recordable - 100 > 0
    reason = " ".join(body["details"]["coverage"]["reasons"])
    assert "not subscribed" in reason and "capacity is 100" in reason
    assert status["coverage"]["unplaced"] == recordable - 100
    assert f'kalshi_gatherer_order_book_markets{{state="unplaced"}} {float(recordable - 100)}' in metrics


async def test_rest_snapshots_land_with_source_rest(gatherer_dsn: str) -> None:
    """The poller sends ``tickers`` repeated (the strict endpoint answers a comma-joined value as one unknown
    ticker, or 400 over 200 characters): every polled market lands in orderbook_snapshots as source='rest'."""
    import psycopg

    async with SimExchange(SimConfig(markets=150, seed=33, rate=0, paused=True)) as ex:
        g = Gatherer(
            make_settings(gatherer_dsn, ex.rest_url, ex.ws_url, snapshot_poller={"interval_s": 1.0}), progress=False
        )
        task = asyncio.create_task(g.run())
        try:
            assert await g.wait_ready(30)
            n = len(g.shards.sub_of)

            def rest_rows() -> int:
                with psycopg.connect(gatherer_dsn) as c:
                    row = c.execute(
                        "SELECT count(DISTINCT ticker) FROM orderbook_snapshots WHERE source = 'rest'"
                    ).fetchone()
                return row[0] if row else 0

            await until(lambda: rest_rows() == n, 30, "a REST snapshot of every market", interval=0.5)
            assert g.poller.errors == 0
        finally:
            g.request_stop()
            await asyncio.wait_for(task, 30)
