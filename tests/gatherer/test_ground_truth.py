"""The gatherer against the local exchange and a real PostgreSQL: stored events equal the exchange's ground truth."""

from __future__ import annotations

import asyncio

import pytest

from kalshictl.gatherer.service import Gatherer
from kalshictl.sim import SimConfig, SimExchange
from kalshictl.sim.ground_truth import load
from tests.gatherer.conftest import (
    covered,
    db_gaps,
    db_keys,
    extra_missing,
    gt_keys,
    make_settings,
    probe_all,
    until,
)
from tests.gatherer.test_fidelity import sim_config


async def _run_and_compare(
    gatherer_dsn: str,
    *,
    faults: str = "",
    seconds: float = 3.0,
    seed: int = 3,
    markets: int = 60,
    rate: float = 400.0,
    drops: int = 0,
    variant: dict | None = None,
    websocket: dict | None = None,
) -> dict:
    cfg = sim_config(markets=markets, seed=seed, rate=rate, paused=True, **(variant or {}))
    async with SimExchange(cfg) as ex:
        g = Gatherer(make_settings(gatherer_dsn, ex.rest_url, ex.ws_url, websocket=websocket or {}), progress=False)
        task = asyncio.create_task(g.run())
        try:
            assert await g.wait_ready(30), "gatherer did not start"
            await until(lambda: g.manager.healthy_count() == g.manager.target, 15, "all connections subscribed")
            if faults:
                ex.set_faults(faults)
            ex.resume()
            for _ in range(drops):
                await asyncio.sleep(seconds / (drops + 1))
                ex.drop_connections()
            await asyncio.sleep(seconds / (drops + 1) if drops else seconds)  # workload duration, not a sync wait
            ex.pause()
            ex.set_faults("")
            ex.flush()
            truth = gt_keys(load(ex.ground_truth_path))

            def settled() -> bool:
                # everything emitted has arrived and been committed (resync windows allowed to stay missing)
                stored = db_keys(gatherer_dsn)
                return (
                    all(not extra_missing(k, stored[k], truth[k])[0] for k in truth)
                    and (faults or drops or all(stored[k] == truth[k] for k in truth))
                    and sum(len(g.writers[t]) for t in g.writers.by_table) == 0
                )

            if faults or drops:
                await probe_all(g)  # reveal lost frames that nothing followed (the exchange is paused now)
            await until(settled, 20, "stored rows to match the ground truth", interval=0.25)
            if faults or drops:
                await until(lambda: not g.router.sync.awaiting, 15, "resync to finish")
        finally:
            g.request_stop()
            await asyncio.wait_for(task, 30)
        stored = db_keys(gatherer_dsn)
        gaps = db_gaps(gatherer_dsn)
        return {"truth": truth, "stored": stored, "gaps": gaps, "gatherer": g, "stats": ex.stats()}


async def test_clean_run_equals_ground_truth(gatherer_dsn: str) -> None:
    r = await _run_and_compare(gatherer_dsn)
    truth, stored = r["truth"], r["stored"]
    for kind in truth:
        assert truth[kind], f"the run produced no {kind} events"
        missing = truth[kind] - stored[kind]
        extra = stored[kind] - truth[kind]
        assert not missing and not extra, f"{kind}: {sum(missing.values())} missing, {sum(extra.values())} extra"
    assert r["gatherer"].router.stats.parse_errors == 0
    # an occurrence > 0 was exercised (identical deltas in one millisecond)
    assert any(k[5] > 0 for k in truth["delta"])


@pytest.mark.parametrize("faults", ["skip_seq=0.01,dup=0.01,malformed=0.01,rest_429=0.2"])
@pytest.mark.parametrize(
    "variant",
    [
        pytest.param({}, id="sim-default"),
        pytest.param({"ack_seq": "own", "repeat_subscribe": "merge"}, id="own-merge"),
        pytest.param({"ack_seq": "last", "repeat_subscribe": "new_sid", "snapshot_seq": "none"}, id="last-new_sid"),
    ],
)
async def test_faulted_run_never_wrong_and_gaps_cover_losses(gatherer_dsn: str, faults: str, variant: dict) -> None:
    """Faults on, under each protocol reading: no row that is not in the ground truth, every loss in a window."""
    ws = {"markets_per_subscription": 12, "subscriptions_per_connection": 4} if variant else None
    r = await _run_and_compare(gatherer_dsn, faults=faults, drops=2, seed=5, variant=variant, websocket=ws)
    truth, stored, gaps = r["truth"], r["stored"], r["gaps"]
    for kind in truth:
        extra, missing = extra_missing(kind, stored[kind], truth[kind])
        assert not extra, f"{kind}: {sum(extra.values())} rows not in the ground truth: {list(extra)[:3]}"
        uncovered = [k for k in missing if not covered(kind, k, gaps)]
        assert not uncovered, f"{kind}: {len(uncovered)} missing events outside any gap window: {uncovered[:3]}"
        assert sum(stored[kind].values()) > 0.5 * sum(truth[kind].values()), f"{kind}: too little captured"
    g = r["gatherer"]
    assert g.router.stats.parse_errors > 0 and g.router.stats.duplicates > 0
    assert any(reason in ("seq_gap", "seq_backwards") for _, reason, *_ in gaps)
    assert any(reason == "disconnect" for _, reason, *_ in gaps)


async def test_a_lost_last_delta_is_found_by_the_seq_probe(gatherer_dsn: str) -> None:
    """A delta lost with nothing after it on its subscription (an idle market) is a gap found by the seq probe."""
    async with SimExchange(SimConfig(markets=20, seed=8, rate=0, paused=True)) as ex:
        g = Gatherer(make_settings(gatherer_dsn, ex.rest_url, ex.ws_url), progress=False)
        task = asyncio.create_task(g.run())
        try:
            assert await g.wait_ready(30)
            await until(lambda: g.manager.healthy_count() == g.manager.target, 15, "all connections subscribed")
            await probe_all(g)
            assert g.router.stats.tail_gaps == 0  # nothing lost yet: the probe's acks match what was received
            ex.set_faults("skip_seq=1.0")  # every order-book frame from now on is lost in transit
            ex.step(200)
            ex.set_faults("")
            ex.flush()
            lost = [r for r in load(ex.ground_truth_path) if r["kind"] == "delta"]
            assert lost
            await probe_all(g)
            await until(lambda: g.router.stats.tail_gaps > 0, 10, "the probe to reveal the lost frames")
            await until(lambda: not g.router.sync.awaiting, 15, "resnapshots")
        finally:
            g.request_stop()
            await asyncio.wait_for(task, 30)
    gaps = db_gaps(gatherer_dsn)
    truth = gt_keys(lost)
    assert all(covered("delta", k, gaps) for k in truth["delta"]), "lost deltas outside the recorded gap windows"
