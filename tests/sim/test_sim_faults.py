"""Fault injection: every fault type is observable by a client, counted, and changeable at runtime."""

from __future__ import annotations

import time
from itertools import pairwise

import aiohttp
import orjson
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from kalshictl.sim import SimExchange
from kalshictl.sim.faults import FaultSpec
from kalshictl.sim.ground_truth import load

from .conftest import WsClient, get_json, wait_for


def test_spec_parse_and_errors() -> None:
    spec = FaultSpec.parse("drop=0.001, skip_seq=0.002,dup=0.002,malformed=0.001,rest_429=0.05,rest_slow=0.01:2.0")
    assert spec.probs["skip_seq"] == 0.002 and spec.seconds["rest_slow"] == 2.0
    assert FaultSpec.parse("refuse=0.5").seconds["refuse"] == 5.0
    assert str(FaultSpec.parse(str(spec))) == str(spec)
    assert FaultSpec.parse("").probs == {} and FaultSpec.parse("none").probs == {}
    for bad in ("drop", "drop=2", "boom=0.1", "dup=x", "dup=0.1:3", "rest_slow=0.1:-1"):
        with pytest.raises(ValueError):
            FaultSpec.parse(bad)


async def _subscribed(sim: SimExchange, ws: object) -> WsClient:
    client = WsClient(ws)
    tickers = [sim.universe.ticker(i) for i in sim.universe.busy[:5]]
    await client.send("subscribe", channels=["orderbook_delta", "trade", "ticker"], market_tickers=tickers)
    await client.until(lambda m: m.get("type") == "orderbook_snapshot")
    return client


async def test_skip_seq_gap_is_in_ground_truth(sim: SimExchange) -> None:
    async with websockets.connect(sim.ws_url) as ws:
        client = await _subscribed(sim, ws)
        await client.barrier()
        sim.set_faults("skip_seq=0.2")
        sim.step(400)
        sim.set_faults("")
        sim.step(200)  # frames after the last skipped one reveal every gap
        await client.barrier()
    seqs = [m["seq"] for m in client.of_type("orderbook_snapshot", "orderbook_delta")]
    gaps = [b - a for a, b in pairwise(seqs) if b - a != 1]
    assert gaps and all(g > 1 for g in gaps), "seq only jumps forward"
    skipped = sim.stats()["faults"]["skip_seq"]
    assert skipped == sum(g - 1 for g in gaps)
    sim.flush()
    tickers = {sim.universe.ticker(i) for i in sim.universe.busy[:5]}
    emitted = sum(1 for r in load(sim.ground_truth_path) if r["kind"] == "delta" and r["ticker"] in tickers)
    received = len(client.of_type("orderbook_delta"))
    assert emitted == received + skipped


async def test_dup_and_malformed_frames(sim: SimExchange) -> None:
    sim.set_faults("dup=0.1,malformed=0.1")
    async with websockets.connect(sim.ws_url) as ws:
        client = await _subscribed(sim, ws)
        sim.step(300)
        await client.barrier()
    assert client.garbage, "malformed frames arrive as non-JSON text"
    raw = client.raw
    assert any(a == b and '"type":"orderbook_delta"' in a for a, b in pairwise(raw))
    faults = sim.stats()["faults"]
    assert faults["malformed"] == len(client.garbage) and faults["dup"] > 0


async def test_drop_fault_and_control_drop(sim: SimExchange, http: aiohttp.ClientSession) -> None:
    async with websockets.connect(sim.ws_url) as ws:
        client = await _subscribed(sim, ws)
        sim.set_faults("drop=0.05")
        sim.step(400)
        with pytest.raises(ConnectionClosed):
            while True:
                await client.recv(timeout=5)
    assert sim.stats()["faults"]["drop"] >= 1
    sim.set_faults("")
    await wait_for(lambda: sim.stats()["connections"]["open"] == 0)
    # the control endpoint drops every connection now
    async with websockets.connect(sim.ws_url) as ws:
        client = await _subscribed(sim, ws)
        async with http.post(f"{sim.base_url}/_sim/drop") as r:
            assert (await r.json())["dropped"] == 1
        with pytest.raises(ConnectionClosed):
            while True:
                await client.recv(timeout=5)


async def test_refuse_connections(sim: SimExchange, http: aiohttp.ClientSession) -> None:
    sim.set_faults("refuse=1:30")
    with pytest.raises(InvalidStatus) as exc:
        await websockets.connect(sim.ws_url)
    assert exc.value.response.status_code == 503
    sim.set_faults("")
    with pytest.raises(InvalidStatus):  # still inside the refusal window
        await websockets.connect(sim.ws_url)
    sim.faults.refuse_until = 0.0  # end the window
    async with websockets.connect(sim.ws_url):
        pass
    async with http.post(f"{sim.base_url}/_sim/refuse", params={"seconds": "30"}) as r:
        assert r.status == 200
    with pytest.raises(InvalidStatus):
        await websockets.connect(sim.ws_url)
    assert sim.stats()["faults"]["refuse"] >= 3 and sim.stats()["connections"]["refused"] >= 3


async def test_rest_faults_and_runtime_change(sim: SimExchange, http: aiohttp.ClientSession) -> None:
    url = f"{sim.rest_url}/exchange/status"
    async with http.post(f"{sim.base_url}/_sim/faults", json={"spec": "rest_429=1"}) as r:
        assert r.status == 200 and (await r.json())["spec"] == "rest_429=1"
    async with http.get(url) as r:
        assert r.status == 429 and await r.read() == b'{"error": "too many requests"}'
        assert "Retry-After" not in r.headers
    async with http.post(f"{sim.base_url}/_sim/faults", data="rest_slow=1:0.3") as r:
        assert r.status == 200
    start = time.monotonic()
    status, _ = await get_json(http, url)
    assert status == 200 and time.monotonic() - start >= 0.3
    async with http.post(f"{sim.base_url}/_sim/faults", data="nonsense=1") as r:
        assert r.status == 400
    async with http.post(f"{sim.base_url}/_sim/faults", json={"spec": ""}) as r:
        assert r.status == 200
    status, _ = await get_json(http, url)
    assert status == 200
    _, stats = await get_json(http, f"{sim.base_url}/_sim/stats")
    assert stats["faults"]["rest_429"] == 1 and stats["faults"]["rest_slow"] == 1


async def test_control_endpoints(sim: SimExchange, http: aiohttp.ClientSession) -> None:
    base = f"{sim.base_url}/_sim"
    t = sim.universe.ticker(sim.universe.busy[0])
    status, book = await get_json(http, f"{base}/book/{t}")
    assert status == 200 and book == sim.book(t) and all(isinstance(p, int) for p, _ in book["yes"])
    status, _ = await get_json(http, f"{base}/book/NOPE")
    assert status == 404
    async with http.post(f"{base}/step", params={"n": "50"}) as r:
        assert (await r.json())["emitted"] >= 50
    async with http.post(f"{base}/resume") as r:
        assert (await r.json()) == {"paused": False}
    before = sim.stats()["events"].get("delta", 0)
    await wait_for(lambda: sim.stats()["events"].get("delta", 0) > before + 20)
    async with http.post(f"{base}/pause") as r:
        assert (await r.json()) == {"paused": True}
    async with http.post(f"{base}/flush") as r:
        body = await r.json()
        assert body["path"] == str(sim.ground_truth_path)
    status, cfg = await get_json(http, f"{base}/config")
    assert cfg["markets"] == 60 and cfg["seed"] == 1 and cfg["rest_url"] == sim.rest_url
    _, stats = await get_json(http, f"{base}/stats")
    assert stats["paused"] is True and stats["events"]["delta"] > 0 and stats["ground_truth_records"] > 0


async def test_list_dup_names_listed_markets_twice_and_lifecycle_control_changes_statuses(sim: SimExchange) -> None:
    base = sim.rest_url
    async with aiohttp.ClientSession() as http:
        _, clean = await get_json(http, f"{base}/markets", limit=50)
        sim.set_faults("list_dup=1")
        _, doubled = await get_json(http, f"{base}/markets", limit=50)
        sim.set_faults("")
        tickers = [m["ticker"] for m in clean["markets"]]
        assert sorted(m["ticker"] for m in doubled["markets"]) == sorted(tickers * 2)
        assert doubled["cursor"] == clean["cursor"]  # the paging itself is unchanged
        assert sim.faults.counts["list_dup"] == len(tickers)
        ctl = f"{sim.control_url}/lifecycle"
        async with http.post(ctl, params={"create": "1", "deactivate": "2"}) as r:
            made = orjson.loads(await r.read())
        assert made["created"] and len(made["deactivated"]) == 2 and made["activated"] == []
        for t in made["deactivated"]:
            _, m = await get_json(http, f"{base}/markets/{t}")
            assert m["market"]["status"] == "inactive"
        async with http.post(ctl, params={"activate": "2"}) as r:
            assert sorted(orjson.loads(await r.read())["activated"]) == sorted(made["deactivated"])
        async with http.post(ctl, params={"create": "x"}) as r:
            assert r.status == 400
    sim.flush()
    events = {(r["ticker"], r["event_type"]) for r in load(sim.ground_truth_path) if r["kind"] == "lifecycle"}
    assert {(t, "created") for t in made["created"]} <= events
    assert {(t, e) for t in made["deactivated"] for e in ("deactivated", "activated")} <= events
