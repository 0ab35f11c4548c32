"""`kalshictl replay` against a real recorded period: a client written from Kalshi's docs (subscribe, snapshot, deltas
with seq, trades) receives exactly production; REST answers as of the replay clock; NDJSON; gaps; pacing."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import httpx
import orjson
import pytest
import websockets

from kalshictl.replay.server import ReplayOptions, ReplayServer
from kalshictl.units import parse_price, parse_size

pytestmark = pytest.mark.slow


def _levels(raw: list | None) -> list[list[int]]:
    return [[parse_price(p), parse_size(s)] for p, s in raw or []]


def _book_show(recorded, ticker: str, at_us: int) -> dict:
    argv = [sys.executable, "-m", "kalshictl", "book", "show", ticker, "--at", str(at_us), "--depth", "0"]
    proc = subprocess.run([*argv, "--config", str(recorded.config), "--json"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


async def _read_all(ws, timeout: float = 60.0) -> list[tuple[float, dict]]:
    """Every frame until the server closes the connection (the end of the period), with its arrival time."""
    out = []
    deadline = time.monotonic() + timeout
    while True:
        try:
            raw = await asyncio.wait_for(ws.recv(), max(0.1, deadline - time.monotonic()))
        except websockets.ConnectionClosed:
            return out
        out.append((time.monotonic(), orjson.loads(raw)))


def _production_deltas(recorded, ticker: str, from_us: int, to_us: int) -> list[tuple]:
    with recorded.connect() as conn:
        return conn.execute(
            "SELECT exchange_ts / 1000, side, price, size_delta FROM orderbook_deltas WHERE ticker = %s AND "
            "exchange_ts > %s AND exchange_ts <= %s ORDER BY exchange_ts, side, price, size_delta, occurrence",
            (ticker, from_us, to_us),
        ).fetchall()


def _production_trades(recorded, tickers: list[str], from_us: int, to_us: int) -> set[tuple]:
    with recorded.connect() as conn:
        rows = conn.execute(
            "SELECT trade_id::text, ticker, price, size, taker_side, exchange_ts / 1000 FROM trades "
            "WHERE ticker = ANY(%s) AND exchange_ts > %s AND exchange_ts <= %s",
            (tickers, from_us, to_us),
        ).fetchall()
    return set(rows)


@pytest.mark.timeout(600)
async def test_a_docs_client_receives_the_book_at_from_then_exactly_productions_deltas_and_trades(recorded):
    span = recorded.last_ts - recorded.first_ts
    from_us, to_us = recorded.first_ts + span // 3, recorded.last_ts
    tickers = recorded.busiest(from_us, to_us, 3)
    assert len(tickers) == 3
    async with ReplayServer(recorded.db, ReplayOptions(from_us, to_us, speed=None, port=0)) as rs:
        async with websockets.connect(rs.ws_url, max_size=None) as ws:
            params = {"channels": ["orderbook_delta", "trade"], "market_tickers": tickers}
            await ws.send(orjson.dumps({"id": 1, "cmd": "subscribe", "params": params}).decode())
            frames = [m for _, m in await _read_all(ws)]
    acks = [m for m in frames if m.get("type") == "subscribed"]
    assert sorted(a["msg"]["channel"] for a in acks) == ["orderbook_delta", "trade"]
    book_sid = next(a["msg"]["sid"] for a in acks if a["msg"]["channel"] == "orderbook_delta")
    book_frames = [m for m in frames if m.get("type") in ("orderbook_snapshot", "orderbook_delta")]
    assert all(m["sid"] == book_sid for m in book_frames)
    seqs = [m["seq"] for m in book_frames]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "seq must be contiguous on the sid"
    for ticker in tickers:
        mine = [m["msg"] for m in book_frames if m["msg"]["market_ticker"] == ticker]
        first, rest = mine[0], mine[1:]
        assert "delta_fp" not in first  # the snapshot comes first
        expected = _book_show(recorded, ticker, from_us)
        assert _levels(first.get("yes_dollars_fp")) == expected["yes_bids"]
        assert _levels(first.get("no_dollars_fp")) == expected["no_bids"]
        got = [
            (d["ts_ms"], d["side"] == "yes", parse_price(d["price_dollars"]), parse_size(d["delta_fp"], signed=True))
            for d in rest
        ]
        want = _production_deltas(recorded, ticker, from_us, to_us)
        assert len(want) > 10 and got == [tuple(r) for r in want]
    trades = {
        (
            t["trade_id"],
            t["market_ticker"],
            parse_price(t["yes_price_dollars"]),
            parse_size(t["count_fp"]),
            t["taker_side"] == "yes",
            t["ts_ms"],
        )
        for t in (m["msg"] for m in frames if m.get("type") == "trade")
    }
    want_trades = _production_trades(recorded, tickers, from_us, to_us)
    assert want_trades and trades == want_trades
    assert sum(m.get("type") == "trade" for m in frames) == len(want_trades)  # none twice


@pytest.mark.timeout(300)
async def test_rest_answers_as_of_the_replay_clock(recorded):
    span = recorded.last_ts - recorded.first_ts
    from_us, to_us = recorded.first_ts + span // 2, recorded.last_ts
    ticker = recorded.busiest(from_us, to_us, 1)[0]
    async with ReplayServer(recorded.db, ReplayOptions(from_us, to_us, speed=None, port=0)) as rs:
        async with httpx.AsyncClient(base_url=rs.rest_url, timeout=30) as http:
            assert (await http.get("/exchange/status")).json()["exchange_active"] is True
            book = (await http.get(f"/markets/{ticker}/orderbook")).json()["orderbook_fp"]
            at_from = _book_show(recorded, ticker, from_us)
            assert _levels(book["yes_dollars"]) == at_from["yes_bids"]
            assert _levels(book["no_dollars"]) == at_from["no_bids"]
            market = (await http.get(f"/markets/{ticker}")).json()["market"]
            assert market["ticker"] == ticker and market["status"] == "active"
            seen, cursor = [], ""
            while True:
                page = (await http.get("/markets", params={"limit": 7, "cursor": cursor})).json()
                seen += [m["ticker"] for m in page["markets"]]
                cursor = page["cursor"]
                if not cursor:
                    break
            with recorded.connect() as conn:
                all_markets = [r[0] for r in conn.execute("SELECT ticker FROM markets ORDER BY ticker")]
                n_before = conn.execute("SELECT count(*) FROM trades WHERE exchange_ts <= %s", (from_us,)).fetchone()
            assert seen == all_markets and len(seen) >= 30
            trades = (await http.get("/markets/trades", params={"limit": 1000})).json()["trades"]
            assert len(trades) == min(n_before[0], 1000)
            event = market["event_ticker"]
            assert (await http.get(f"/events/{event}")).json()["event"]["event_ticker"] == event
            series = (await http.get(f"/events/{event}")).json()["event"]["series_ticker"]
            assert (await http.get(f"/series/{series}")).json()["series"]["ticker"] == series
            assert (await http.get("/markets/NOPE-1")).status_code == 404
            books = (await http.get("/markets/orderbooks", params={"tickers": [ticker, "NOPE-1"]})).json()
            assert books["orderbooks"] == [{"ticker": ticker, "orderbook_fp": book}]
            events, cursor = [], ""
            while True:
                page = (await http.get("/events", params={"limit": 3, "cursor": cursor})).json()
                events += [e["event_ticker"] for e in page["events"]]
                if not (cursor := page["cursor"]):
                    break
            assert event in events and len(events) == len(set(events))
            assert series in [s["ticker"] for s in (await http.get("/series")).json()["series"]]
            rs.session.started.set()  # run the whole period with no client, then the book is the book at --to
            await rs.done()
            book = (await http.get(f"/markets/{ticker}/orderbook")).json()["orderbook_fp"]
            at_to = _book_show(recorded, ticker, to_us)
            assert _levels(book["yes_dollars"]) == at_to["yes_bids"]
            assert _levels(book["no_dollars"]) == at_to["no_bids"]


@pytest.mark.timeout(300)
async def test_ndjson_streams_productions_trades(recorded):
    from_us, to_us = recorded.first_ts, recorded.last_ts
    tickers = recorded.busiest(from_us, to_us, 4)
    async with ReplayServer(recorded.db, ReplayOptions(from_us, to_us, speed=None, port=0)) as rs:
        async with httpx.AsyncClient(base_url=rs.base_url, timeout=60) as http:
            params = {"from": str(from_us), "to": str(to_us), "channels": "trade", "tickers": ",".join(tickers)}
            resp = await http.get("/replay", params=params)
            bad = await http.get("/replay", params={"channels": "nope"})
    assert resp.status_code == 200 and bad.status_code == 400
    lines = [orjson.loads(line) for line in resp.text.splitlines()]
    assert all(line["message"]["type"] == "trade" for line in lines)
    stamps = [line["ts"] for line in lines]
    assert stamps == sorted(stamps)
    got = {
        (
            m["trade_id"],
            m["market_ticker"],
            parse_price(m["yes_price_dollars"]),
            parse_size(m["count_fp"]),
            m["taker_side"] == "yes",
            m["ts_ms"],
        )
        for m in (line["message"]["msg"] for line in lines)
    }
    want = _production_trades(recorded, tickers, from_us, to_us)
    assert want and got == want and len(lines) == len(want)


@pytest.mark.timeout(300)
async def test_speed_1_keeps_exchange_time_spacing(recorded):
    from_us = recorded.first_ts + 1_000_000
    to_us = min(recorded.last_ts, from_us + 4_000_000)
    tickers = recorded.busiest(from_us, to_us, 10)
    async with ReplayServer(recorded.db, ReplayOptions(from_us, to_us, speed=1.0, port=0)) as rs:
        async with websockets.connect(rs.ws_url, max_size=None) as ws:
            params = {"channels": ["orderbook_delta", "trade"], "market_tickers": tickers}
            await ws.send(orjson.dumps({"id": 1, "cmd": "subscribe", "params": params}).decode())
            frames = await _read_all(ws)
    timed = [(t, m["msg"]["ts_ms"]) for t, m in frames if m.get("type") in ("orderbook_delta", "trade")]
    assert len(timed) > 100
    offsets = sorted(arrival * 1000 - ts_ms for arrival, ts_ms in timed)  # ms; constant if spacing is kept
    median = offsets[len(offsets) // 2]
    errors = sorted(abs(o - median) for o in offsets)
    p99 = errors[int(len(errors) * 0.99) - 1]
    print(f"speed 1: {len(errors)} frames, spacing error p50 {errors[len(errors) // 2]:.1f} ms, p99 {p99:.1f} ms")
    assert p99 <= 50, f"p99 spacing error {p99:.1f} ms"
    assert (timed[-1][0] - timed[0][0]) * 1000 >= (timed[-1][1] - timed[0][1]) - 50  # not faster than real time


@pytest.mark.timeout(300)
async def test_a_window_no_gatherer_recorded_is_listed_and_followed_by_a_fresh_snapshot(recorded):
    span = recorded.last_ts - recorded.first_ts
    from_us, to_us = recorded.first_ts + span // 4, recorded.last_ts
    ticker = recorded.busiest(from_us, to_us, 1)[0]
    gap_from, gap_to = from_us + span // 4, from_us + span // 2
    with recorded.connect() as conn:
        query = "SELECT DISTINCT gatherer FROM sync_cursors WHERE gatherer LIKE 'gatherer-%'"
        names = [r[0] for r in conn.execute(query)]
        assert len(names) == 3
        for i, name in enumerate(names):
            conn.execute(
                "INSERT INTO sequence_gaps (gatherer, instance_id, window_id, channel, tickers, reason, from_ts, "
                "to_ts, detected_at) VALUES (%s, 'replay-test', %s, 'orderbook_delta', %s, 'seq_gap', %s, %s, %s)",
                (name, 900 + i, [ticker], gap_from - i * 1000, gap_to + i * 1000, gap_to),
            )
    try:
        async with ReplayServer(recorded.db, ReplayOptions(from_us, to_us, speed=None, port=0)) as rs:
            async with httpx.AsyncClient(base_url=rs.base_url, timeout=30) as http:
                gaps = (await http.get("/replay/gaps")).json()["gaps"]
            async with websockets.connect(rs.ws_url, max_size=None) as ws:
                sub = {"channels": ["orderbook_delta"], "market_tickers": [ticker]}
                await ws.send(orjson.dumps({"id": 1, "cmd": "subscribe", "params": sub}).decode())
                frames = [m for _, m in await _read_all(ws)]
    finally:
        with recorded.connect() as conn:
            conn.execute("DELETE FROM sequence_gaps WHERE instance_id = 'replay-test'")
    # the intersection of the three windows: what no gatherer recorded (the demo period may have windows of its own)
    windows = [(g["ticker"], g["from_ts"], g["to_ts"]) for g in gaps]
    assert (ticker, gap_from, gap_to) in windows
    mine = [g for g in gaps if g["ticker"] in (ticker, "*") and g["channel"] in ("orderbook_delta", "*")]
    snaps = [i for i, m in enumerate(frames) if m.get("type") == "orderbook_snapshot"]
    assert len(snaps) == 1 + len({g["to_ts"] for g in mine})
    stamps = [(i, m["msg"]["ts_ms"]) for i, m in enumerate(frames) if m.get("type") == "orderbook_delta"]
    k = next(i for i in snaps[1:] if all((ts <= gap_to // 1000) == (j < i) for j, ts in stamps))
    expected = _book_show(recorded, ticker, gap_to)
    assert _levels(frames[k]["msg"].get("yes_dollars_fp")) == expected["yes_bids"]
    assert _levels(frames[k]["msg"].get("no_dollars_fp")) == expected["no_bids"]


@pytest.mark.timeout(300)
async def test_a_client_that_does_not_read_is_disconnected_with_kalshis_error_25(recorded):
    import socket

    from_us, to_us = recorded.first_ts, recorded.last_ts
    tickers = recorded.busiest(from_us, to_us, 100)
    # A 4 KiB queue at 10^6x: the events sent between two turns of the writer (up to 256) overflow it whatever the
    # kernel's socket buffers hold, so the outcome does not depend on how much of the period fits in flight.
    opts = ReplayOptions(from_us, to_us, speed=1e6, port=0, buffer_bytes=4 * 1024)
    async with ReplayServer(recorded.db, opts) as rs:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a slow link: little room in flight
        sock.connect(("127.0.0.1", rs.port))
        async with websockets.connect(rs.ws_url, sock=sock, max_size=None) as ws:
            params = {"channels": ["orderbook_delta", "trade", "ticker"], "market_tickers": tickers}
            await ws.send(orjson.dumps({"id": 1, "cmd": "subscribe", "params": params}).decode())
            await rs.done()  # the client reads nothing while the whole period is sent
            frames = [m for _, m in await _read_all(ws)]
        async with httpx.AsyncClient(base_url=rs.base_url) as http:
            status = (await http.get("/replay/status")).json()
    assert frames[-1] == {"id": 0, "type": "error", "msg": {"code": 25, "msg": "Subscription buffer overflow"}}
    assert status["slow_consumer_disconnects"] == 1
