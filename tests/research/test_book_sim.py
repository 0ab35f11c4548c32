"""`book` against the local exchange: production rows built from a WS snapshot + ground-truth deltas must rebuild
exactly the exchange's own book; REST snapshots taken during the run verify clean; an injected gap is found."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections import Counter

import httpx
import orjson
import pytest
import websockets

from kalshictl.research.book import Book
from kalshictl.sim import SimConfig, SimExchange
from kalshictl.sim.ground_truth import load
from kalshictl.units import parse_price, parse_size
from tests.research.conftest import insert_deltas, insert_snapshot


def _levels(raw: list | None) -> dict[int, int]:
    return {parse_price(p): parse_size(s) for p, s in raw or []}


def _cli(*args: str, code: int = 0) -> dict:
    proc = subprocess.run([sys.executable, "-m", "kalshictl", *args, "--json"], capture_output=True, text=True)
    assert proc.returncode == code, proc.stderr
    return json.loads(proc.stdout)


async def _busy(ex: SimExchange, n: int = 5) -> list[str]:
    ex.step(600)
    ex.flush()
    counts = Counter(r["ticker"] for r in load(ex.ground_truth_path) if r["kind"] == "delta")
    return [t for t, _ in counts.most_common(n)]


@pytest.mark.timeout(120)
async def test_book_equals_exchange_book_and_verify_with_rest_snapshots(prod):
    async with SimExchange(SimConfig(markets=20, seed=3, rate=300)) as ex:
        tickers = await _busy(ex)
        rests: dict[str, list[tuple[int, dict]]] = {t: [] for t in tickers}
        snaps: dict[str, dict] = {}
        counts: Counter = Counter()

        def on(msg: dict) -> None:
            if msg.get("type") == "orderbook_snapshot":
                snaps[msg["msg"]["market_ticker"]] = msg["msg"]
            elif msg.get("type") == "orderbook_delta":
                counts[msg["msg"]["market_ticker"]] += 1

        async with websockets.connect(ex.ws_url) as ws, httpx.AsyncClient(base_url=ex.rest_url) as http:
            sub = {"id": 1, "cmd": "subscribe", "params": {"channels": ["orderbook_delta"], "market_tickers": tickers}}
            await ws.send(orjson.dumps(sub).decode())
            while len(snaps) < len(tickers):
                on(orjson.loads(await asyncio.wait_for(ws.recv(), 10)))
            deadline = time.monotonic() + 2.5
            next_rest = time.monotonic() + 0.15
            while time.monotonic() < deadline:
                if time.monotonic() >= next_rest:
                    for t in tickers:
                        resp = await http.get(f"/markets/{t}/orderbook")
                        rests[t].append((time.time_ns() // 1000, resp.json()["orderbook_fp"]))
                    next_rest += 0.2
                try:
                    on(orjson.loads(await asyncio.wait_for(ws.recv(), 0.05)))
                except TimeoutError:
                    continue
            ex.pause()
            # drain what the exchange already queued, until the socket is quiet
            while True:
                try:
                    on(orjson.loads(await asyncio.wait_for(ws.recv(), 0.5)))
                except TimeoutError:
                    break
        ex.flush()
        ticker, ws_deltas = counts.most_common(1)[0]
        snap, rest = snaps[ticker], rests[ticker]
        truth = [r for r in load(ex.ground_truth_path) if r["kind"] == "delta" and r["ticker"] == ticker]
        exchange_book = ex.book(ticker)
    assert ws_deltas > 20 and len(rest) >= 8
    before, after = truth[: len(truth) - ws_deltas], truth[len(truth) - ws_deltas :]
    # anchor the WS snapshot at a millisecond boundary: if pre-snapshot deltas share the first post-snapshot
    # millisecond, take them out of the snapshot (deltas are additive) and store them as deltas instead
    book = Book.from_levels(
        sorted(_levels(snap.get("yes_dollars_fp")).items()), sorted(_levels(snap.get("no_dollars_fp")).items())
    )
    first_ms = after[0]["exchange_ts"]
    shared = [r for r in before if r["exchange_ts"] >= first_ms]
    for r in shared:
        book.apply(r["side"] == "yes", r["price"], -r["size_delta"])
    stored = shared + after
    with prod.connect() as conn:
        insert_snapshot(conn, ticker, first_ms - 1, book.yes, book.no, source="ws", gatherer="g1")
        insert_deltas(
            conn,
            [
                (ticker, r["exchange_ts"], r["side"] == "yes", r["price"], r["size_delta"], r["occurrence"])
                for r in stored
            ],
        )
        for recv, ob in rest:
            insert_snapshot(
                conn, ticker, recv, _levels(ob["yes_dollars"]), _levels(ob["no_dollars"]), source="rest", gatherer="g2"
            )
    cfg = str(prod.config)
    out = _cli("book", ticker, "--at", "now", "--depth", "0", "--config", cfg)
    assert out["base"]["source"] == "rest" or out["base"]["source"] == "ws"
    # the latest REST snapshot may be the base; rebuild from the WS snapshot too, just before the first REST one
    assert out["yes_bids"] == exchange_book["yes"] and out["no_bids"] == exchange_book["no"]
    from_ws = _cli("book", ticker, "--at", str(rest[0][0] - 1), "--depth", "0", "--config", cfg)
    assert from_ws["base"]["source"] == "ws" and from_ws["deltas_applied"] > 0
    with prod.connect() as conn:
        conn.execute("DELETE FROM orderbook_snapshots WHERE source = 'rest'")
    only_ws = _cli("book", ticker, "--at", "now", "--depth", "0", "--config", cfg)
    assert only_ws["base"]["source"] == "ws" and only_ws["deltas_applied"] == len(stored)
    assert only_ws["yes_bids"] == exchange_book["yes"] and only_ws["no_bids"] == exchange_book["no"]
    yes_best = exchange_book["yes"][-1][0] if exchange_book["yes"] else None
    no_best = exchange_book["no"][-1][0] if exchange_book["no"] else None
    assert only_ws["best_yes_bid"] == yes_best
    assert only_ws["best_yes_ask"] == (10_000 - no_best if no_best is not None else None)

    # book verify: every REST snapshot of the run matches the replay within the tolerance
    with prod.connect() as conn:
        for recv, ob in rest:
            insert_snapshot(
                conn, ticker, recv, _levels(ob["yes_dollars"]), _levels(ob["no_dollars"]), source="rest", gatherer="g2"
            )
    window = ("--from", str(first_ms - 1), "--to", "now")
    clean = _cli("book", "verify", ticker, *window, "--config", cfg)
    assert clean["ok"] and clean["checked"] == len(rest) and clean["base"]["source"] == "ws"
    # inject a gap into the copy: delete the deltas between the 3rd and 6th REST snapshots (away from their edges)
    lo, hi = rest[2][0] + 250_000, rest[5][0] - 250_000
    with prod.connect() as conn:
        gone = conn.execute(
            "DELETE FROM orderbook_deltas WHERE exchange_ts > %s AND exchange_ts < %s RETURNING exchange_ts",
            (lo, hi),
        ).fetchall()
    assert gone, "no deltas in the gap window"
    bad = _cli("book", "verify", ticker, *window, "--config", cfg, code=1)
    first = bad["mismatches"][0]
    # reported at the first REST snapshot after the deleted deltas, window back to the last matching snapshot
    first_gone = min(g[0] for g in gone)
    starts = [r[0] for r in rest]
    k = next(i for i, t in enumerate(starts) if t > first_gone)
    assert (first["window_from"], first["window_to"]) == (starts[k - 1], starts[k])
    assert first["window_from"] < first_gone <= first["window_to"]
    assert all(m["window_from"] >= starts[k - 1] and m["window_to"] <= rest[5][0] for m in bad["mismatches"])
