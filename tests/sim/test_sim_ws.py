"""WebSocket protocol: snapshot + contiguous deltas reproduce the book; commands, acks and error codes."""

from __future__ import annotations

from collections import Counter, defaultdict

import aiohttp
import pytest
import websockets

from kalshictl.sim import SimExchange
from kalshictl.sim.ground_truth import load
from kalshictl.units import ms_to_us, parse_price, parse_size

from .conftest import WsClient, config, get_json, wait_for


def apply(book: dict[str, dict[int, int]], msg: dict) -> None:
    side = book[msg["side"]]
    price = parse_price(msg["price_dollars"])
    new = side.get(price, 0) + parse_size(msg["delta_fp"], signed=True)
    assert new >= 0, "a level went negative"
    if new:
        side[price] = new
    else:
        side.pop(price, None)


def from_snapshot(msg: dict) -> dict[str, dict[int, int]]:
    return {
        side: {parse_price(p): parse_size(s) for p, s in msg.get(f"{side}_dollars_fp", [])} for side in ("yes", "no")
    }


async def test_snapshot_deltas_reproduce_book_and_ground_truth(
    sim: SimExchange, ws_client: WsClient, http: aiohttp.ClientSession
) -> None:
    u = sim.universe
    tickers = [u.ticker(i) for i in u.busy[:3]]
    cid = await ws_client.send("subscribe", channels=["orderbook_delta", "ticker", "trade"], market_tickers=tickers)
    sim.resume()
    await ws_client.until(lambda m: len(ws_client.of_type("orderbook_delta")) >= 60, timeout=10)
    sim.pause()
    await ws_client.barrier()

    acks = [m for m in ws_client.frames if m.get("id") == cid]
    assert [a["msg"]["channel"] for a in acks] == ["orderbook_delta", "ticker", "trade"]
    book_sid = acks[0]["msg"]["sid"]
    ob = ws_client.of_type("orderbook_snapshot", "orderbook_delta")
    assert {m["sid"] for m in ob} == {book_sid}
    assert [m["seq"] for m in ob] == list(range(1, len(ob) + 1)), "seq starts at 1 and is contiguous"
    assert [m["type"] for m in ob[:3]] == ["orderbook_snapshot"] * 3
    for m in ws_client.of_type("ticker", "trade"):
        assert "seq" not in m and m["sid"] in {a["msg"]["sid"] for a in acks}

    books: dict[str, dict[str, dict[int, int]]] = {}
    for m in ob:
        if m["type"] == "orderbook_snapshot":
            books[m["msg"]["market_ticker"]] = from_snapshot(m["msg"])
        else:
            d = m["msg"]
            assert set(d) == {"market_ticker", "market_id", "price_dollars", "delta_fp", "side", "ts", "ts_ms"}
            apply(books[d["market_ticker"]], d)
    for t in tickers:
        mine = {s: sorted(books[t][s].items()) for s in ("yes", "no")}
        sims = sim.book(t)
        assert mine == {s: [tuple(lv) for lv in sims[s]] for s in ("yes", "no")}
        _, rest = await get_json(http, f"{sim.rest_url}/markets/{t}/orderbook")
        for side in ("yes", "no"):
            levels = [(parse_price(p), parse_size(s)) for p, s in rest["orderbook_fp"][f"{side}_dollars"]]
            assert levels == mine[side]

    # ground truth: per ticker, what the client received is exactly the tail of what the exchange emitted
    sim.flush()
    gt = load(sim.ground_truth_path)
    for t in tickers:
        emitted = [
            (r["exchange_ts"], r["side"], r["price"], r["size_delta"])
            for r in gt
            if r["kind"] == "delta" and r["ticker"] == t
        ]
        got = [
            (ms_to_us(d["ts_ms"]), d["side"], parse_price(d["price_dollars"]), parse_size(d["delta_fp"], signed=True))
            for d in (m["msg"] for m in ob if m["type"] == "orderbook_delta")
            if d["market_ticker"] == t
        ]
        assert got and emitted[-len(got) :] == got
    trades_gt = {r["trade_id"]: r for r in gt if r["kind"] == "trade"}
    for m in ws_client.of_type("trade"):
        d = m["msg"]
        r = trades_gt[d["trade_id"]]
        assert (r["ticker"], r["exchange_ts"], r["price"], r["no_price"], r["size"], r["taker_side"]) == (
            d["market_ticker"],
            ms_to_us(d["ts_ms"]),
            parse_price(d["yes_price_dollars"]),
            parse_price(d["no_price_dollars"]),
            parse_size(d["count_fp"]),
            d["taker_outcome_side"],
        )
    tickers_gt = {(r["ticker"], r["exchange_ts"]): r for r in gt if r["kind"] == "ticker"}
    got_tickers = ws_client.of_type("ticker")
    assert got_tickers
    for m in got_tickers:
        d = m["msg"]
        r = tickers_gt[(d["market_ticker"], ms_to_us(d["ts_ms"]))]
        assert r["yes_bid"] == parse_price(d["yes_bid_dollars"]) and r["yes_ask"] == parse_price(d["yes_ask_dollars"])
        assert r["volume"] == parse_size(d["volume_fp"]) and r["last_price"] == parse_price(d["price_dollars"])


async def test_use_yes_price(sim: SimExchange, ws_client: WsClient) -> None:
    idx = next(i for i in sim.universe.busy if sim.universe.peek(i).book.no)
    t = sim.universe.ticker(idx)
    await ws_client.send("subscribe", channels=["orderbook_delta"], market_ticker=t, use_yes_price=True)
    snap = await ws_client.until(lambda m: m.get("type") == "orderbook_snapshot")
    got = sorted((parse_price(p), parse_size(s)) for p, s in snap["msg"]["no_dollars_fp"])
    assert got == sorted((10_000 - p, s) for p, s in sim.book(t)["no"])
    sim.universe.state(idx)
    sim.activity.delta_action(idx, sim.clock.now_ms())  # force deltas until a no-side one arrives
    for _ in range(200):
        sim.activity.delta_action(idx, sim.clock.now_ms())
    await ws_client.barrier()
    no_deltas = [m["msg"] for m in ws_client.of_type("orderbook_delta") if m["msg"]["side"] == "no"]
    assert no_deltas
    gt_no = {
        (r["exchange_ts"], r["price"], r["size_delta"])
        for r in (sim.flush() and load(sim.ground_truth_path))
        if r["kind"] == "delta" and r["side"] == "no"
    }
    for d in no_deltas:
        key = (ms_to_us(d["ts_ms"]), 10_000 - parse_price(d["price_dollars"]), parse_size(d["delta_fp"], signed=True))
        assert key in gt_no


async def test_command_errors(ws_client: WsClient, sim: SimExchange) -> None:
    t = sim.universe.ticker(0)

    async def code_of(cmd: str, **params: object) -> int:
        reply = await ws_client.reply(await ws_client.send(cmd, **params))
        assert reply["type"] == "error"
        return reply["msg"]["code"]

    assert await code_of("nope") == 5
    assert await code_of("subscribe", channels=["ticker_v2"]) == 8
    assert await code_of("subscribe", channels=["multivariate"]) == 8
    assert await code_of("subscribe", channels=["orderbook_delta"]) == 14
    assert await code_of("subscribe", market_ticker=t) == 3
    assert await code_of("subscribe") == 2
    assert await code_of("subscribe", channels=["fill"]) == 9
    reply = await ws_client.reply(await ws_client.send("subscribe", channels=["trade"], market_tickers=[t, "NOPE"]))
    assert reply["msg"] == {"code": 16, "msg": "Market not found", "market_ticker": "NOPE"}
    assert await code_of("unsubscribe") == 4
    assert await code_of("unsubscribe", sids=[99]) == 7
    await ws_client.send("subscribe", channels=["orderbook_delta"], market_ticker=t)
    ack = await ws_client.until(lambda m: m.get("type") == "subscribed")
    sid = ack["msg"]["sid"]
    assert await code_of("update_subscription", sids=[sid, sid + 1], action="add_markets", market_tickers=[t]) == 12
    assert await code_of("update_subscription", sid=sid, market_tickers=[t]) == 15
    assert await code_of("update_subscription", sid=sid, action="explode", market_tickers=[t]) == 13
    assert await code_of("update_subscription", sid=sid, action="add_markets") == 14
    assert await code_of("update_subscription", sid=999, action="add_markets", market_tickers=[t]) == 7
    await ws_client.ws.send("{not json")
    reply = await ws_client.until(lambda m: m.get("type") == "error")
    assert reply["msg"]["code"] == 1


@pytest.mark.parametrize("sim", [{"max_markets_per_sub": 3}], indirect=True)
async def test_market_cap_error_26(sim: SimExchange, ws_client: WsClient) -> None:
    tickers = [sim.universe.ticker(i) for i in range(4)]
    reply = await ws_client.reply(await ws_client.send("subscribe", channels=["ticker"], market_tickers=tickers))
    assert reply["msg"]["code"] == 26
    reply = await ws_client.reply(await ws_client.send("subscribe", channels=["ticker"], market_tickers=tickers[:3]))
    sid = reply["msg"]["sid"]
    cid = await ws_client.send("update_subscription", sids=[sid], action="add_markets", market_tickers=tickers[3:])
    assert (await ws_client.reply(cid))["msg"]["code"] == 26


async def test_update_subscription_merge_and_unsubscribe(sim: SimExchange, ws_client: WsClient) -> None:
    """Default options: acks consume a seq of their sid, get_snapshot consumes one, a repeat subscribe merges."""
    u = sim.universe
    a, b, c = (u.ticker(i) for i in u.busy[:3])
    await ws_client.send("subscribe", channels=["orderbook_delta"], market_ticker=a)
    sid = (await ws_client.until(lambda m: m.get("type") == "subscribed"))["msg"]["sid"]
    cid = await ws_client.send("update_subscription", sids=[sid], action="add_markets", market_tickers=[b])
    ack = await ws_client.reply(cid)
    assert (
        ack["type"] == "ok"
        and ack["sid"] == sid
        and ack["seq"] == 2  # snapshot of a was 1; the ack takes 2
        and sorted(ack["msg"]["market_tickers"]) == sorted([a, b])
    )
    snap = await ws_client.until(lambda m: m.get("type") == "orderbook_snapshot" and m["msg"]["market_ticker"] == b)
    assert snap["seq"] == 3
    cid = await ws_client.send("update_subscription", sid=sid, action="get_snapshot", market_tickers=[a])
    assert (await ws_client.reply(cid))["seq"] == 4
    snap = await ws_client.until(lambda m: m.get("type") == "orderbook_snapshot")
    assert snap["seq"] == 5 and snap["msg"]["market_ticker"] == a
    # a repeat subscribe merges into the same sid: an ok ack with the full list, a snapshot only for the new market
    cid = await ws_client.send("subscribe", channels=["orderbook_delta"], market_tickers=[a, c])
    ack = await ws_client.reply(cid)
    assert ack == {"id": cid, "sid": sid, "seq": 6, "type": "ok", "msg": {"market_tickers": sorted([a, b, c])}}
    snap = await ws_client.until(lambda m: m.get("type") == "orderbook_snapshot")
    assert snap["seq"] == 7 and snap["msg"]["market_ticker"] == c
    cid = await ws_client.send("update_subscription", sids=[sid], action="delete_markets", market_tickers=[a, b])
    assert (await ws_client.reply(cid))["msg"]["market_tickers"] == [c]
    cid = await ws_client.send("subscribe", channels=["market_lifecycle_v2"])
    lsid = (await ws_client.reply(cid))["msg"]["sid"]
    cid = await ws_client.send("subscribe", channels=["market_lifecycle_v2"])  # idempotent since 2025-10-01
    again = await ws_client.reply(cid)
    assert again["type"] == "ok" and again["sid"] == lsid
    cid = await ws_client.send("subscribe", channels=["ticker"], market_tickers=[a])
    tsid = (await ws_client.reply(cid))["msg"]["sid"]
    cid = await ws_client.send("subscribe", channels=["ticker"])  # all markets on top of a per-market sid
    assert (await ws_client.reply(cid))["msg"]["code"] == 6
    listed = await ws_client.reply(await ws_client.send("list_subscriptions"))
    assert listed["type"] == "ok" and listed["msg"] == [
        {"channel": "orderbook_delta", "sid": sid},
        {"channel": "market_lifecycle_v2", "sid": lsid},
        {"channel": "ticker", "sid": tsid},
    ]
    cid = await ws_client.send("unsubscribe", sids=[sid])
    assert await ws_client.reply(cid) == {"id": cid, "sid": sid, "seq": 9, "type": "unsubscribed"}
    assert sim.feed.by_ticker["orderbook_delta"] == {}


@pytest.mark.parametrize(
    "sim", [{"lifecycle_share": 0.25, "create_share": 0.1, "rate": 2000, "mve_share": 0.0}], indirect=True
)
async def test_lifecycle_ticker_trade_all_markets(sim: SimExchange, ws_client: WsClient, http) -> None:
    await ws_client.send("subscribe", channels=["ticker", "trade", "market_lifecycle_v2"])
    await ws_client.barrier()
    sim.resume()

    def seen() -> bool:
        types = Counter(m["msg"]["event_type"] for m in ws_client.of_type("market_lifecycle_v2"))
        return all(types[t] for t in ("created", "activated", "deactivated", "determined")) and bool(
            ws_client.of_type("event_lifecycle")
        )

    await ws_client.until(lambda m: seen(), timeout=15)
    sim.pause()
    await ws_client.barrier()
    created = [m["msg"] for m in ws_client.of_type("market_lifecycle_v2") if m["msg"]["event_type"] == "created"]
    for m in ws_client.of_type("market_lifecycle_v2", "ticker", "trade", "event_lifecycle"):
        assert "seq" not in m and isinstance(m["sid"], int)
    for m in ws_client.of_type("market_lifecycle_v2", "event_lifecycle"):
        assert not {"ts", "ts_ms"} & set(m["msg"]), "Kalshi's lifecycle messages carry no time of their own"
    assert {"close_ts", "open_ts", "price_level_structure", "price_ranges"} <= set(created[0])
    status, body = await get_json(http, f"{sim.rest_url}/markets/{created[0]['market_ticker']}")
    assert status == 200 and body["market"]["status"] in (
        "initialized",
        "active",
        "inactive",
        "determined",
        "finalized",
    )
    trade_keys = {"trade_id", "market_ticker", "yes_price_dollars", "no_price_dollars", "count_fp", "taker_side"}
    trade_keys |= {"taker_outcome_side", "taker_book_side", "is_block_trade", "ts_ms", "ts"}
    assert set(ws_client.of_type("trade")[0]["msg"]) == trade_keys
    ticker_keys = {"market_ticker", "market_id", "price_dollars", "yes_bid_dollars", "yes_ask_dollars", "volume_fp"}
    ticker_keys |= {"open_interest_fp", "dollar_volume", "dollar_open_interest", "yes_bid_size_fp", "yes_ask_size_fp"}
    ticker_keys |= {"last_trade_size_fp", "ts_ms", "ts", "time"}
    assert set(ws_client.of_type("ticker")[0]["msg"]) == ticker_keys
    # every lifecycle message received is in the ground truth with its exact payload
    sim.flush()
    gt = [r for r in load(sim.ground_truth_path) if r["kind"] == "lifecycle"]
    sent = [(r["ticker"], r["event_type"], r["payload"]) for r in gt if r["channel"] == "market_lifecycle_v2"]
    msgs = [f["msg"] for f in ws_client.of_type("market_lifecycle_v2")]
    got = [(m["market_ticker"], m["event_type"], m) for m in msgs]
    assert got and all(g in sent for g in got)


@pytest.mark.parametrize("sim", [{"heartbeat_s": 0.05}], indirect=True)
async def test_heartbeat_ping(sim: SimExchange, http: aiohttp.ClientSession) -> None:
    async with http.ws_connect(sim.ws_url, autoping=False) as ws:
        msg = await ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.PING and msg.data == b"heartbeat"
        await ws.pong(msg.data)
    await wait_for(lambda: sim.stats()["pings"] >= 1)


async def test_many_clients_share_events(sim: SimExchange) -> None:
    t = sim.universe.ticker(sim.universe.busy[0])
    clients = []
    conns = [websockets.connect(sim.ws_url) for _ in range(3)]
    try:
        for c in conns:
            ws = await c.__aenter__()
            client = WsClient(ws)
            await client.send("subscribe", channels=["orderbook_delta"], market_ticker=t)
            await client.until(lambda m: m.get("type") == "orderbook_snapshot")
            clients.append(client)
        sim.step(300)
        per_client = defaultdict(list)
        for i, client in enumerate(clients):
            await client.barrier()
            per_client[i] = [(m["msg"]["ts_ms"], m["msg"]["delta_fp"]) for m in client.of_type("orderbook_delta")]
        assert per_client[0] and per_client[0] == per_client[1] == per_client[2]
        assert sim.stats()["connections"]["open"] == 3
    finally:
        for c in conns:
            await c.__aexit__(None, None, None)
    await wait_for(lambda: sim.stats()["connections"]["open"] == 0)


def test_config_helper_is_paused() -> None:
    assert config().paused
