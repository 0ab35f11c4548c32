"""`kalshictl replay` across tiers: a period replays to the same messages (per-market snapshot and deltas with
contiguous seq, trades, tickers, lifecycle) before and after its first day left production for the cold tier
(Iceberg tables and plain Parquet on moto's S3 server), and a row arriving after the drop joins the stream once."""

from __future__ import annotations

import asyncio
import time

import httpx
import orjson
import psycopg
import pytest
import websockets

from kalshictl.errors import KalshiCtlError
from kalshictl.ops.cold_tier import drop_exported_days, export_closed_days
from kalshictl.replay.server import ReplayOptions, ReplayServer
from kalshictl.replay.source import DELTA, LIFECYCLE, TICKER, TRADE, cold_plan
from kalshictl.research import research_db
from kalshictl.research.cold import open_cold_store
from tests.research.conftest import insert_deltas, prod, s3_endpoint  # noqa: F401 (fixtures)
from tests.research.test_cold_tier import DAY, DAY1, HOUR, _dedup, cold  # noqa: F401 (fixture)
from tests.research.test_cold_tier import TICKER as MARKET

FROM = DAY1 + HOUR + HOUR // 2  # after DAY1's WebSocket snapshot (+1 h): the book at FROM comes from the cold tier
TO = DAY1 + DAY + 3 * HOUR  # into DAY2, which stays in production
CHANNELS = "orderbook_delta,trade,ticker,market_lifecycle_v2"
TABLES = ("orderbook_deltas", "trades", "tickers", "lifecycle_events")


def _seed_events(conn: psycopg.Connection) -> None:
    """Trades, WebSocket and REST ticker rows and lifecycle events on DAY1 and DAY2 (the fixture seeds the books)."""
    for d in range(2):
        base = DAY1 + d * DAY
        for i in range(3):
            ts = base + 2 * HOUR + 500 + i * 1000  # among the burst of deltas
            conn.execute(
                "INSERT INTO trades (trade_id, exchange_ts, received_at, ticker, price, size, taker_side, gatherer)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, 'g1')",
                (f"00000000-0000-4000-8000-{d:06d}{i:06d}", ts, ts + 100, MARKET, 4200 + i, 100 * (i + 1), i % 2 == 0),
            )
            for source in ("ws", "rest"):
                conn.execute(
                    "INSERT INTO tickers (exchange_ts, received_at, ticker, yes_bid, yes_ask, last_price, volume,"
                    " open_interest, dollar_volume, dollar_open_interest, gatherer, source)"
                    " VALUES (%s, %s, %s, %s, 5000, 4200, %s, 7, 3, 1, 'g1', %s)",
                    (ts, ts + 100, MARKET, 4100 + i, 1000 + i, source),
                )
        payload = {"market_ticker": MARKET, "event_type": "close_date_updated", "close_ts": 1_900_000_000 + d}
        conn.execute(
            "INSERT INTO lifecycle_events (exchange_ts, received_at, ticker, event_type, payload, gatherer, digest)"
            " VALUES (%s, %s, %s, 'close_date_updated', %s, 'g1', %s)",
            (base + 2 * HOUR + 700, base + 2 * HOUR + 800, MARKET, orjson.dumps(payload).decode(), bytes([d]) * 32),
        )


async def _replay(settings) -> tuple[list[dict], list[dict]]:
    """(NDJSON lines of every channel, WebSocket frames of orderbook_delta + trade) of [FROM, TO] for MARKET."""
    opts = ReplayOptions(FROM, TO, speed=None, port=0, tickers=[MARKET])
    async with ReplayServer(research_db(settings), opts, settings=settings) as rs:
        async with httpx.AsyncClient(base_url=rs.base_url, timeout=60) as http:
            resp = await http.get("/replay", params={"channels": CHANNELS, "tickers": MARKET})
            assert resp.status_code == 200, resp.text
        async with websockets.connect(rs.ws_url, max_size=None) as ws:
            params = {"channels": ["orderbook_delta", "trade"], "market_tickers": [MARKET]}
            await ws.send(orjson.dumps({"id": 1, "cmd": "subscribe", "params": params}).decode())
            frames = []
            deadline = time.monotonic() + 60
            while True:
                try:
                    frames.append(orjson.loads(await asyncio.wait_for(ws.recv(), deadline - time.monotonic())))
                except websockets.ConnectionClosed:
                    break
    return [orjson.loads(line) for line in resp.text.splitlines()], frames


def _book_frames(messages: list[dict]) -> list[dict]:
    book = [m for m in messages if m.get("type") in ("orderbook_snapshot", "orderbook_delta")]
    seqs = [m["seq"] for m in book]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "seq must be contiguous on the sid"
    return book


@pytest.mark.timeout(300)
async def test_a_replay_is_the_same_before_and_after_its_day_left_production(cold):  # noqa: F811
    prod_, settings, dsn = cold
    with prod_.connect() as admin:
        _seed_events(admin)
    lines_before, ws_before = await _replay(settings)
    types = [line["message"]["type"] for line in lines_before]
    # the period holds every kind on both days, and DAY1's gap ends in a fresh snapshot
    assert {"orderbook_snapshot", "orderbook_delta", "trade", "ticker", "market_lifecycle_v2"} <= set(types)
    assert types.count("orderbook_snapshot") == 2 and types.count("trade") == 6 and types.count("ticker") == 6
    assert len(_book_frames(ws_before)) == 1 + 50 + 1 + 1 + 50  # FROM, DAY1's burst, after the gap, DAY2
    _book_frames([line["message"] for line in lines_before])

    with _dedup(dsn) as conn:
        now = DAY1 + 2 * DAY + 12 * HOUR  # DAY1 is older than keep_days=1, DAY2 is not
        export_closed_days(conn, open_cold_store(settings.exporter), now, settle_s=0)
        dropped = {
            (o.table, o.day) for o in drop_exported_days(conn, now, keep_days=1).outcomes if o.action == "dropped"
        }
        assert {(t, "2026-11-20") for t in (*TABLES, "orderbook_snapshots")} <= dropped
        for table in TABLES:  # nothing of DAY1 is left in production: the replay must read the cold tier
            n = conn.execute(f"SELECT count(*) FROM {table} WHERE exchange_ts >= %s AND exchange_ts < %s",
                             (DAY1, DAY1 + DAY)).fetchone()[0]  # fmt: skip
            assert n == 0, table
        with conn.transaction():
            assert set(cold_plan(conn, FROM, TO, (DELTA, TRADE, TICKER, LIFECYCLE))) == {
                DELTA,
                TRADE,
                TICKER,
                LIFECYCLE,
            }

    lines_after, ws_after = await _replay(settings)
    assert lines_after == lines_before
    assert ws_after == ws_before

    # rows reaching production after the drop (its default partition) join the cold day's rows, each once
    late = DAY1 + 2 * HOUR + 10 * 1000 + 1  # between two deltas of the burst
    with _dedup(dsn) as conn:
        insert_deltas(conn, [(MARKET, late, False, 5100, 3, 0)], gatherer="g3")
        insert_deltas(conn, [(MARKET, DAY1 + 2 * HOUR + 1000, True, 4201, 101, 0)], gatherer="g3")  # a cold copy
    lines_late, ws_late = await _replay(settings)
    book_late = _book_frames(ws_late)
    deltas_late = [m["msg"] for m in book_late if m["type"] == "orderbook_delta"]
    added = [
        d for d in deltas_late if d["ts_ms"] == late // 1000 and d["side"] == "no" and d["price_dollars"] == "0.5100"
    ]
    assert len(added) == 1 and len(book_late) == len(_book_frames(ws_before)) + 1
    stamps = [d["ts_ms"] for d in deltas_late]
    assert stamps == sorted(stamps)
    strip = lambda ms: [m for m in ms if m not in added]  # noqa: E731
    before_msgs = [m["msg"] for m in _book_frames(ws_before) if m["type"] == "orderbook_delta"]
    assert strip(deltas_late) == before_msgs
    assert [line for line in lines_late if line["message"]["type"] == "trade"] == [
        line for line in lines_before if line["message"]["type"] == "trade"
    ]

    # a config that names no cold tier stops the replay at start, naming the key, rather than serve half a day
    s3 = settings.exporter.s3.model_copy(update={"dest": None})
    bare = settings.model_copy(update={"exporter": settings.exporter.model_copy(update={"s3": s3})})
    with pytest.raises(KalshiCtlError, match=r"exporter\.s3\.dest"):
        async with ReplayServer(research_db(bare), ReplayOptions(FROM, TO, speed=None, port=0), settings=bare):
            pass
    # a period wholly in production (DAY2) still rebuilds books across tiers: order-book days left, so the same error
    with pytest.raises(KalshiCtlError, match=r"orderbook_snapshots, orderbook_deltas"):
        async with ReplayServer(research_db(bare), ReplayOptions(DAY1 + DAY, TO, port=0), settings=bare):
            pass
