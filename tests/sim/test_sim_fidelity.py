"""Kalshi fidelity: the documented behaviour by default, each uncertain reading as an option (docs/sim.md table)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import aiohttp
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from kalshictl.sim import SimExchange
from kalshictl.sim.ground_truth import load

from .conftest import WsClient, get_json, wait_for

TIME_KEYS = {"ts", "ts_ms", "open_ts", "close_ts", "settled_ts", "determination_ts"}


def _book_frames(client: WsClient, sid: int) -> list[dict]:
    return [m for m in client.frames if m.get("sid") == sid and "seq" in m]


@pytest.mark.parametrize(
    ("sim", "ack_own", "snap_consumes"),
    [
        ({}, True, True),
        ({"ack_seq": "last", "snapshot_seq": "none"}, False, False),
        ({"ack_seq": "own", "snapshot_seq": "none"}, True, False),
        ({"ack_seq": "last", "snapshot_seq": "consume"}, False, True),
    ],
    indirect=["sim"],
)
async def test_ack_and_snapshot_seq(sim: SimExchange, ws_client: WsClient, ack_own: bool, snap_consumes: bool) -> None:
    """Acks and get_snapshot replies take (or do not take) a seq of their sid exactly as the options say."""
    u = sim.universe
    a, b = (u.ticker(i) for i in u.busy[:2])
    seq = 0  # the model: what the sid's seq must be after each frame

    def data() -> int:
        nonlocal seq
        seq += 1
        return seq

    def ack() -> int:
        nonlocal seq
        seq += 1 if ack_own else 0
        return seq

    cid = await ws_client.send("subscribe", channels=["orderbook_delta"], market_ticker=a)
    sid = (await ws_client.reply(cid))["msg"]["sid"]
    assert (await ws_client.until(lambda m: m.get("type") == "orderbook_snapshot"))["seq"] == data()
    cid = await ws_client.send("update_subscription", sid=sid, action="add_markets", market_tickers=[b])
    assert (await ws_client.reply(cid))["seq"] == ack()
    assert (await ws_client.until(lambda m: m.get("type") == "orderbook_snapshot"))["seq"] == data()
    for _ in range(2):
        cid = await ws_client.send("update_subscription", sids=[sid], action="get_snapshot", market_tickers=[a, b])
        assert (await ws_client.reply(cid))["seq"] == ack()
        for t in (a, b):
            snap = await ws_client.until(lambda m: m.get("type") == "orderbook_snapshot")
            assert snap["msg"]["market_ticker"] == t
            assert snap["seq"] == (data() if snap_consumes else seq)
    sim.step(200)
    await ws_client.barrier()
    deltas = [m for m in ws_client.of_type("orderbook_delta") if m["sid"] == sid]
    assert deltas and [m["seq"] for m in deltas] == list(range(seq + 1, seq + 1 + len(deltas))), "ack.seq + 1 next"
    seq += len(deltas)
    cid = await ws_client.send("unsubscribe", sids=[sid])
    assert (await ws_client.reply(cid))["seq"] == ack()
    if ack_own and snap_consumes:  # the documented default: acks and data share one contiguous numbering
        numbered = sorted(m["seq"] for m in ws_client.frames if m.get("sid") == sid and "seq" in m)
        assert numbered == list(range(1, seq + 1))


@pytest.mark.parametrize("sim", [{"repeat_subscribe": "new_sid"}], indirect=True)
async def test_repeat_subscribe_new_sid(sim: SimExchange, ws_client: WsClient) -> None:
    u = sim.universe
    a, c = u.ticker(u.busy[0]), u.ticker(u.busy[1])
    s1 = await ws_client.reply(await ws_client.send("subscribe", channels=["orderbook_delta"], market_ticker=a))
    s2 = await ws_client.reply(await ws_client.send("subscribe", channels=["orderbook_delta"], market_ticker=c))
    assert s1["type"] == s2["type"] == "subscribed" and s2["msg"]["sid"] != s1["msg"]["sid"]
    sid1, sid2 = s1["msg"]["sid"], s2["msg"]["sid"]
    sim.step(300)
    await ws_client.barrier()
    for sid, t in ((sid1, a), (sid2, c)):
        frames = _book_frames(ws_client, sid)
        assert frames[0]["type"] == "orderbook_snapshot" and frames[0]["seq"] == 1, "each sid numbers from 1"
        assert {m["msg"]["market_ticker"] for m in frames} == {t}
        assert [m["seq"] for m in frames] == list(range(1, len(frames) + 1))
    # each sid answers get_snapshot for its own markets only
    cid = await ws_client.send("update_subscription", sid=sid2, action="get_snapshot", market_tickers=[a])
    assert (await ws_client.reply(cid))["msg"]["code"] == 11
    cid = await ws_client.send("subscribe", channels=["market_lifecycle_v2"])
    await ws_client.reply(cid)
    cid = await ws_client.send("subscribe", channels=["market_lifecycle_v2"])
    assert (await ws_client.reply(cid))["msg"]["code"] == 6, "a second global subscription is refused"
    subs = sim.subscriptions()
    assert [(s["sid"], s["channel"], s["tickers"]) for s in subs[0]["subscriptions"]] == [
        (sid1, "orderbook_delta", [a]),
        (sid2, "orderbook_delta", [c]),
        (sid2 + 1, "market_lifecycle_v2", None),
    ]


@pytest.mark.parametrize("sim", [{"max_markets_per_sub": 2}], indirect=True)
async def test_merge_respects_the_market_cap(sim: SimExchange, ws_client: WsClient) -> None:
    t = [sim.universe.ticker(i) for i in range(3)]
    await ws_client.reply(await ws_client.send("subscribe", channels=["ticker"], market_tickers=t[:2]))
    reply = await ws_client.reply(await ws_client.send("subscribe", channels=["ticker"], market_tickers=t[2:]))
    assert reply["type"] == "error" and reply["msg"]["code"] == 26


async def test_strict_orderbooks_endpoint(sim: SimExchange, http: aiohttp.ClientSession) -> None:
    url = f"{sim.rest_url}/markets/orderbooks"
    tickers = [sim.universe.ticker(i) for i in range(5)]
    async with http.get(url, params=[("tickers", t) for t in tickers]) as r:
        assert r.status == 200
        assert [b["ticker"] for b in (await r.json())["orderbooks"]] == tickers
    # a comma-joined value is one (unknown) ticker, not a list
    status, body = await get_json(http, url, tickers=",".join(tickers))
    assert status == 200 and body == {"orderbooks": []}
    many = [sim.universe.ticker(i % sim.universe.n_markets) for i in range(40)]
    joined = ",".join(many)
    assert len(joined) > 200
    status, body = await get_json(http, url, tickers=joined)
    assert status == 400 and body["error"]["code"] == "bad_request"
    status, _ = await get_json(http, url)
    assert status == 400
    async with http.get(url, params=[("tickers", tickers[0])] * 101) as r:
        assert r.status == 400
    async with http.get(url, params=[("tickers", tickers[0])] * 100) as r:
        assert r.status == 200 and len((await r.json())["orderbooks"]) == 100


@pytest.mark.parametrize(
    "sim", [{"mve_share": 0.5, "lifecycle_share": 0.08, "metadata_share": 0.08, "create_share": 0.02}], indirect=True
)
async def test_lifecycle_as_kalshi_sends_it(sim: SimExchange, ws_client: WsClient) -> None:
    cid = await ws_client.send("subscribe", channels=["market_lifecycle_v2", "multivariate_market_lifecycle"])
    v2 = (await ws_client.reply(cid))["msg"]["sid"]
    mve = (await ws_client.until(lambda m: m.get("id") == cid and m["msg"]["sid"] != v2))["msg"]["sid"]
    assert sim.universe.is_mve(next(i for i in range(sim.universe.n_markets) if sim.universe.is_mve(i)))
    sim.step(15_000)
    await ws_client.barrier()
    now = time.time()
    frames = [m for m in ws_client.frames if m.get("sid") in (v2, mve)]
    kinds = Counter((m["sid"], m["type"]) for m in frames)
    assert kinds[(v2, "market_lifecycle_v2")] and kinds[(v2, "event_fee_update")] and kinds[(v2, "event_lifecycle")]
    assert kinds[(mve, "multivariate_market_lifecycle")] and kinds[(mve, "event_lifecycle")]
    assert set(kinds) <= {
        (v2, "market_lifecycle_v2"), (v2, "event_fee_update"), (v2, "event_lifecycle"),
        (mve, "multivariate_market_lifecycle"), (mve, "event_lifecycle"),
    }  # fmt: skip
    for m in frames:
        msg = m["msg"]
        assert "seq" not in m and not {"ts", "ts_ms"} & set(msg)
        ticker = msg.get("market_ticker") or msg["event_ticker"]
        assert ticker.startswith("KXMVE") == (m["sid"] == mve), "MVE lifecycle only on its own channel"
        if m["type"] == "event_fee_update":
            assert set(msg) == {"event_ticker", "fee_type_override", "fee_multiplier_override"}
        if m["type"] == "event_lifecycle" or "event_type" not in msg:
            continue
        et = msg["event_type"]
        if et in ("deactivated", "metadata_updated"):
            assert not TIME_KEYS & set(msg), f"{et} carries no time at all"
        if et in ("created", "activated"):
            assert msg["close_ts"] > now and msg["open_ts"] <= now + 1
        if m["sid"] == mve:
            assert et != "metadata_updated"
    life = [m["msg"] for m in frames if "event_type" in m["msg"]]
    per_market = Counter((msg["market_ticker"], msg["event_type"]) for msg in life)
    assert any(n > 1 for (_, et), n in per_market.items() if et == "deactivated"), "repeated deactivated"
    assert any(n > 1 for (_, et), n in per_market.items() if et == "metadata_updated"), "repeated metadata_updated"
    # the ground truth has every message with its channel and exact payload, identical repeats numbered
    sim.flush()
    truth = [r for r in load(sim.ground_truth_path) if r["kind"] == "lifecycle"]
    assert len(truth) == len(frames)
    channel_of = {v2: "market_lifecycle_v2", mve: "multivariate_market_lifecycle"}
    for r, m in zip(truth, frames, strict=True):
        assert r["payload"] == m["msg"] and r["channel"] == channel_of[m["sid"]]
        assert r["event_type"] == m["msg"].get("event_type", m["type"])
    seen: Counter = Counter()
    for r in truth:
        key = (r["ticker"], r["event_type"], repr(sorted(r["payload"].items())))
        assert r["occurrence"] == seen[key]
        seen[key] += 1
    assert max(seen.values()) > 1


@pytest.mark.parametrize("sim", [{"mve_share": 0.5}], indirect=True)
async def test_mve_markets_listed_and_booked(sim: SimExchange, ws_client: WsClient, http) -> None:
    base = sim.rest_url
    _, every = await get_json(http, f"{base}/markets", limit=1000)
    _, only = await get_json(http, f"{base}/markets", limit=1000, mve_filter="only")
    _, exclude = await get_json(http, f"{base}/markets", limit=1000, mve_filter="exclude")
    assert only["markets"] and exclude["markets"]
    assert all(m["ticker"].startswith("KXMVE") and m["mve_collection_ticker"] for m in only["markets"])
    assert not any(m["ticker"].startswith("KXMVE") or "mve_collection_ticker" in m for m in exclude["markets"])
    assert len(every["markets"]) == len(only["markets"]) + len(exclude["markets"]) == sim.universe.n_markets
    status, _ = await get_json(http, f"{base}/markets", mve_filter="maybe")
    assert status == 400
    _, events = await get_json(http, f"{base}/events", limit=200)
    assert events["events"] and not any(e["event_ticker"].startswith("KXMVE") for e in events["events"])
    # an MVE market's book streams on orderbook_delta like any other
    idx = next(i for i in sim.universe.busy if sim.universe.is_mve(i))
    t = sim.universe.ticker(idx)
    await ws_client.send("subscribe", channels=["orderbook_delta"], market_ticker=t)
    snap = await ws_client.until(lambda m: m.get("type") == "orderbook_snapshot")
    assert snap["msg"]["market_ticker"] == t
    for _ in range(30):
        sim.activity.delta_action(idx, sim.clock.now_ms())
    await ws_client.barrier()
    assert {m["msg"]["market_ticker"] for m in ws_client.of_type("orderbook_delta")} == {t}


@pytest.mark.parametrize("sim", [{"mve_share": 0.5}], indirect=True)
async def test_mve_listing_set_at_runtime_changes_what_markets_lists(sim: SimExchange, http) -> None:
    """The REST handlers read the live options (``POST /_sim/options``), not a copy taken at start."""
    base = sim.rest_url

    async def tickers(**params: object) -> list[str]:
        _, body = await get_json(http, f"{base}/markets", limit=1000, **params)
        return [m["ticker"] for m in body["markets"]]

    assert any(t.startswith("KXMVE") for t in await tickers())
    async with http.post(f"{sim.control_url}/options", json={"mve_listing": "exclude"}) as resp:
        assert resp.status == 200 and (await resp.json())["mve_listing"] == "exclude"
    listed = await tickers()
    assert listed and not any(t.startswith("KXMVE") for t in listed)
    assert len(listed) + len(await tickers(mve_filter="only")) == sim.universe.n_markets


@pytest.mark.parametrize("sim", [{"delta_ts_ms": "sometimes", "untimed_delta_share": 0.3}], indirect=True)
async def test_deltas_without_ts_sometimes(sim: SimExchange, ws_client: WsClient) -> None:
    tickers = [sim.universe.ticker(i) for i in sim.universe.busy[:4]]
    await ws_client.send("subscribe", channels=["orderbook_delta"], market_tickers=tickers)
    await ws_client.barrier()
    sim.step(500)
    await ws_client.barrier()
    deltas = [m["msg"] for m in ws_client.of_type("orderbook_delta")]
    untimed = [d for d in deltas if "ts_ms" not in d]
    assert untimed and len(untimed) < len(deltas)
    assert all("ts" not in d for d in untimed) and all("ts" in d for d in deltas if "ts_ms" in d)
    sim.flush()
    truth = [r for r in load(sim.ground_truth_path) if r["kind"] == "delta" and r["ticker"] in tickers]
    assert len(truth) == len(deltas)
    for r, d in zip(truth, deltas, strict=True):
        assert r.get("untimed", False) == ("ts_ms" not in d) and r["exchange_ts"] > 0
    sim.set_options(delta_ts_ms="always")
    sim.step(200)
    await ws_client.barrier()
    assert all("ts_ms" in m["msg"] for m in ws_client.of_type("orderbook_delta")[len(deltas) :])


async def test_drop_all_is_an_outage_of_every_channel(sim: SimExchange, http: aiohttp.ClientSession) -> None:
    t = sim.universe.ticker(sim.universe.busy[0])
    async with (
        websockets.connect(sim.ws_url) as book_ws,
        websockets.connect(sim.ws_url) as tick_ws,
        websockets.connect(sim.ws_url) as life_ws,
    ):
        clients = [WsClient(book_ws), WsClient(tick_ws), WsClient(life_ws)]
        await clients[0].reply(await clients[0].send("subscribe", channels=["orderbook_delta"], market_ticker=t))
        await clients[1].reply(await clients[1].send("subscribe", channels=["ticker", "trade"]))
        await clients[2].reply(await clients[2].send("subscribe", channels=["market_lifecycle_v2"]))
        # a frame on a global channel alone (a lifecycle message) takes every connection down
        sim.set_faults("drop_all=1:0.5")
        sim.activity.lifecycle_action(sim.clock.now_ms())
        while sim.stats()["faults"]["drop_all"] == 0:
            sim.activity.metadata_action(sim.clock.now_ms())
        for client in clients:
            with pytest.raises(ConnectionClosed):
                while True:
                    await client.recv(timeout=5)
    sim.set_faults("")
    with pytest.raises(InvalidStatus) as exc:  # the exchange refuses connections during the outage
        await websockets.connect(sim.ws_url)
    assert exc.value.response.status_code == 503
    await wait_for(lambda: time.monotonic() > sim.faults.refuse_until, timeout=5)
    async with websockets.connect(sim.ws_url):
        pass
    async with http.post(f"{sim.base_url}/_sim/drop", params={"refuse": "30"}) as r:
        assert r.status == 200
    with pytest.raises(InvalidStatus):
        await websockets.connect(sim.ws_url)


async def test_cmd_timeout_fault(sim: SimExchange, ws_client: WsClient) -> None:
    t = sim.universe.ticker(0)
    sim.set_faults("cmd_timeout=1")
    reply = await ws_client.reply(await ws_client.send("subscribe", channels=["orderbook_delta"], market_ticker=t))
    assert reply["type"] == "error" and reply["msg"] == {"code": 18, "msg": "Command timeout"}
    listed = await ws_client.reply(await ws_client.send("list_subscriptions"))
    assert listed["msg"] == [], "a timed-out subscribe did not subscribe"
    assert sim.subscriptions()[0]["subscriptions"] == []
    sim.set_faults("")
    reply = await ws_client.reply(await ws_client.send("subscribe", channels=["orderbook_delta"], market_ticker=t))
    assert reply["type"] == "subscribed"
    sim.set_faults("cmd_timeout=1")
    sid = reply["msg"]["sid"]
    reply = await ws_client.reply(
        await ws_client.send("update_subscription", sid=sid, action="get_snapshot", market_tickers=[t])
    )
    assert reply["msg"]["code"] == 18
    assert sim.stats()["faults"]["cmd_timeout"] == 2


async def test_trades_endpoint_per_docs(sim: SimExchange, http: aiohttp.ClientSession) -> None:
    url = f"{sim.rest_url}/markets/trades"
    sim.step(800)
    await asyncio.sleep(1.1)  # workload: trades in two different seconds
    sim.step(800)
    _, body = await get_json(http, url, limit=1000)
    trades = body["trades"]
    assert len(trades) == sim.trades.next_seq
    assert [t["created_time"] for t in trades] == sorted((t["created_time"] for t in trades), reverse=True)
    _, page = await get_json(http, url, limit=0)
    assert len(page["trades"]) == min(100, len(trades)), "limit 0 = the default 100"
    status, _ = await get_json(http, url, limit=1001)
    assert status == 400
    # min_ts / max_ts are Unix seconds, inclusive
    secs = sorted({rec.ts_ms // 1000 for rec in sim.trades._trades})
    assert len(secs) >= 2
    first = secs[0]
    _, body = await get_json(http, url, min_ts=first, max_ts=first, limit=1000)
    expect = [r.trade_id for r in reversed(sim.trades._trades) if r.ts_ms // 1000 == first]
    assert [t["trade_id"] for t in body["trades"]] == expect
    _, body = await get_json(http, url, min_ts=first + 1, limit=1000)
    assert {t["trade_id"] for t in body["trades"]}.isdisjoint(expect)
    ticker = trades[0]["ticker"]
    _, body = await get_json(http, url, ticker=ticker, limit=1000)
    assert body["trades"] and {t["ticker"] for t in body["trades"]} == {ticker}


async def test_markets_tickers_list_and_min_updated_ts(sim: SimExchange, http: aiohttp.ClientSession) -> None:
    base = sim.rest_url
    wanted = [sim.universe.ticker(i) for i in (4, 2, 7)]
    _, body = await get_json(http, f"{base}/markets", tickers=",".join(wanted))
    assert sorted(m["ticker"] for m in body["markets"]) == sorted(wanted)
    since = int(time.time())
    _, body = await get_json(http, f"{base}/markets", min_updated_ts=since, limit=1000)
    before = {m["ticker"] for m in body["markets"]}
    idx = next(i for i in range(sim.universe.n_markets) if not sim.universe.is_mve(i) and i not in before)
    sim.universe.state(idx).updated_ts = since + 1  # a metadata change now
    _, body = await get_json(http, f"{base}/markets", min_updated_ts=since, limit=1000)
    assert {m["ticker"] for m in body["markets"]} == before | {sim.universe.ticker(idx)}


async def test_control_index_options_and_subscriptions(sim: SimExchange, ws_client: WsClient, http) -> None:
    base = f"{sim.base_url}/_sim"
    for path in (base, base + "/"):
        status, index = await get_json(http, path)
        assert status == 200
        paths = {(e["method"], e["path"]) for e in index["endpoints"]}
        assert {("GET", "/_sim/subscriptions"), ("POST", "/_sim/options"), ("GET", "/_sim/stats")} <= paths
        assert all(e["does"] for e in index["endpoints"])
    _, options = await get_json(http, f"{base}/options")
    assert options == {
        "ack_seq": "own", "snapshot_seq": "consume", "repeat_subscribe": "merge", "delta_ts_ms": "always",
        "mve_listing": "include", "max_markets_per_sub": 10_000, "untimed_delta_share": 0.1,
    }  # fmt: skip
    t = sim.universe.ticker(sim.universe.busy[0])
    sid = (await ws_client.reply(await ws_client.send("subscribe", channels=["orderbook_delta"], market_ticker=t)))[
        "msg"
    ]["sid"]
    _, subs = await get_json(http, f"{base}/subscriptions")
    assert subs["connections"][0]["subscriptions"] == [
        {"sid": sid, "channel": "orderbook_delta", "tickers": [t], "seq": 1}
    ]
    assert subs["by_channel"] == {"orderbook_delta": {"subscriptions": 1, "all_markets": 0, "markets": 1}}
    _, subs = await get_json(http, f"{base}/subscriptions", missing="orderbook_delta", status="open")
    active = [sim.universe.ticker(i) for i in range(sim.universe.n_markets) if sim.universe.status(i) == "active"]
    assert subs["missing"]["tickers"] == [x for x in active if x != t] and subs["missing"]["count"] == len(active) - 1
    _, subs = await get_json(http, f"{base}/subscriptions", missing="ticker")
    assert subs["missing"]["count"] == sim.universe.n_markets, "no ticker subscription covers anything"
    status, _ = await get_json(http, f"{base}/subscriptions", missing="ticker", status="bogus")
    assert status == 400
    async with http.post(f"{base}/options", json={"ack_seq": "last"}) as r:
        assert r.status == 200 and (await r.json())["ack_seq"] == "last"
    cid = await ws_client.send("update_subscription", sid=sid, action="get_snapshot", market_tickers=[t])
    assert (await ws_client.reply(cid))["seq"] == 1, "ack_seq=last at runtime: the ack consumes nothing"
    for bad in ({"ack_seq": "mine"}, {"markets": 5}, {"max_markets_per_sub": 0}):
        async with http.post(f"{base}/options", json=bad) as r:
            assert r.status == 400
    assert sim.options()["ack_seq"] == "last"


def test_cli_flags_set_the_options_and_control_url_answers(tmp_path) -> None:
    """``kalshictl sim --ack-seq last ...``: the printed CONTROL URL answers with its index and the options."""
    import json
    import signal
    import subprocess
    import sys
    import urllib.request

    bad = subprocess.run(
        [sys.executable, "-m", "kalshictl", "sim", "--port", "0", "--ack-seq", "mine"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "--ack-seq" in bad.stderr + bad.stdout
    argv = [sys.executable, "-m", "kalshictl", "sim", "--port", "0", "--markets", "20", "--paused"]
    argv += ["--ack-seq", "last", "--snapshot-seq", "none", "--repeat-subscribe", "new_sid"]
    argv += ["--delta-ts-ms", "sometimes"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    try:
        lines = {}
        while "CONTROL" not in lines:
            line = proc.stdout.readline()
            assert line, "the sim exited before printing its URLs"
            key, _, value = line.strip().partition(" ")
            lines[key] = value
        with urllib.request.urlopen(lines["CONTROL"], timeout=5) as r:
            index = json.loads(r.read())
        assert any(e["path"] == "/_sim/subscriptions" for e in index["endpoints"])
        with urllib.request.urlopen(lines["CONTROL"] + "/options", timeout=5) as r:
            options = json.loads(r.read())
        assert (options["ack_seq"], options["snapshot_seq"]) == ("last", "none")
        assert (options["repeat_subscribe"], options["delta_ts_ms"]) == ("new_sid", "sometimes")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert proc.returncode == 0
    assert list(tmp_path.iterdir()) == []


async def test_options_change_the_exchange_not_the_callers_config() -> None:
    from .conftest import config

    cfg = config()
    async with SimExchange(cfg) as ex:
        ex.set_options(ack_seq="last", repeat_subscribe="new_sid")
        assert (ex.cfg.ack_seq, ex.cfg.repeat_subscribe) == ("last", "new_sid")
        with pytest.raises(ValueError, match="snapshot_seq"):
            ex.set_options(ack_seq="own", snapshot_seq="sometimes")
        assert ex.cfg.ack_seq == "last", "a bad option changes nothing"
    assert (cfg.ack_seq, cfg.repeat_subscribe) == ("own", "merge")
    with pytest.raises(ValueError, match="delta_ts_ms"):
        config(delta_ts_ms="never")
