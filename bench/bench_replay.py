"""Replay benchmark: order-book messages/s served by ``kalshictl replay --speed max`` to 1 and to 10 clients, beside
the WebSocket send ceiling measured in the same run (an aiohttp server writing one prebuilt delta frame in a loop to
the same client code), and the replay server's RSS over a long range (sampled through the run: flat = streaming).

Production is synthetic but real: an embedded PostgreSQL migrated with production's schema, ``--deltas`` order-book
deltas over ``--markets`` markets spread over ``--hours`` hours (one snapshot per market at the start) and a trade per
20 deltas. The server runs as its own process (``python -m kalshictl replay``); clients run in another.
Usage: python bench/bench_replay.py [--deltas 300000] [--markets 50] [--hours 6]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson
import psycopg

from kalshictl.db.embedded import PostgresCluster, free_port
from kalshictl.db.migrate import migrate
from kalshictl.db.roles import ROLES, ensure_role

PW = "bench-replay-pw"
START_US = 1_790_000_000_000_000
FRAME = (
    b'{"type":"orderbook_delta","sid":1,"seq":%d,"msg":{"market_ticker":"KXBENCH-E1-T1","price_dollars":"0.4100",'
    b'"delta_fp":"-12.00","side":"yes","ts":"2026-09-21T12:00:00Z","ts_ms":1790000000000}}'
)


def fill(dsn: str, deltas: int, markets: int, hours: float) -> tuple[int, int]:
    """Synthetic production; returns (from_us, to_us)."""
    span = int(hours * 3600e6)
    step = span // deltas
    tickers = [f"KXBENCH-E{m // 5}-T{m % 5}" for m in range(markets)]
    with psycopg.connect(dsn, autocommit=True) as conn, conn.cursor() as cur:
        for t in tickers:
            levels = orjson.dumps([[p, 100_000] for p in range(3000, 5000, 100)]).decode()
            cur.execute(
                "INSERT INTO orderbook_snapshots (snapshot_ts, exchange_ts, ticker, source, yes_bids, yes_asks, "
                "no_bids, no_asks, gatherer) VALUES (%s, %s, %s, 'ws', %s, '[]', %s, '[]', 'g1')",
                (START_US - 1, START_US - 1, t, levels, levels),
            )
        with cur.copy(
            "COPY orderbook_deltas (exchange_ts, received_at, ticker, side, price, size_delta, occurrence, gatherer) "
            "FROM STDIN"
        ) as cp:
            for i in range(deltas):
                ts = START_US + i * step
                sign = 1 if (i // markets) % 2 == 0 else -1
                cp.write_row((ts, ts, tickers[i % markets], i % 3 != 0, 3000 + (i % 20) * 100, sign * 100, 0, "g1"))
        with cur.copy(
            "COPY trades (trade_id, exchange_ts, received_at, ticker, price, size, taker_side, gatherer) FROM STDIN"
        ) as cp:
            for i in range(0, deltas, 20):
                ts = START_US + i * step
                cp.write_row((uuid.UUID(int=i + 1), ts, ts, tickers[i % markets], 4100, 100, True, "g1"))
        cur.execute("ANALYZE")
    return START_US, START_US + span


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


CLIENT = r"""
import asyncio, sys, time, aiohttp, orjson
url, n, tickers = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")
async def one(session, counts, i):
    async with session.ws_connect(url, max_msg_size=0) as ws:
        if tickers != [""]:
            params = {"channels": ["orderbook_delta", "trade"], "market_tickers": tickers}
            await ws.send_str(orjson.dumps({"id": 1, "cmd": "subscribe", "params": params}).decode())
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            counts[i] += 1
async def main():
    counts = [0] * n
    async with aiohttp.ClientSession() as session:
        t0 = time.monotonic()
        await asyncio.gather(*(one(session, counts, i) for i in range(n)))
        print(sum(counts), time.monotonic() - t0, flush=True)
asyncio.run(main())
"""

CEILING = r"""
import asyncio, sys
from aiohttp import web, WSMsgType
frame, count = sys.argv[2].encode(), int(sys.argv[3])
async def ws(request):
    w = web.WebSocketResponse()
    await w.prepare(request)
    for i in range(count):
        await w.send_frame(frame.replace(b"%d", str(i).encode()), WSMsgType.TEXT)
    await w.close()
    return w
app = web.Application(); app.router.add_get("/ws", ws)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
"""


def run_clients(url: str, n: int, tickers: list[str]) -> tuple[int, float]:
    out = subprocess.run([sys.executable, "-c", CLIENT, url, str(n), ",".join(tickers)], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"client failed: {out.stderr[-2000:]}")
    msgs, secs = out.stdout.split()
    return int(msgs), float(secs)


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.stderr.read() if proc.stderr else ''}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit("server did not start")


def ceiling(messages: int) -> float:
    port = free_port()
    frame = FRAME.decode().replace("%d", "%d")
    proc = subprocess.Popen([sys.executable, "-c", CEILING, str(port), frame, str(messages)])
    try:
        wait_port(port, proc)
        n, secs = run_clients(f"http://127.0.0.1:{port}/ws", 1, [""])
        return n / secs
    finally:
        proc.terminate()
        proc.wait(10)


def replay(config: Path, from_us: int, to_us: int, clients: int, tickers: list[str]) -> tuple[float, list[float]]:
    port = free_port()
    argv = [sys.executable, "-m", "kalshictl", "replay", "--config", str(config), "--from", str(from_us), "--to",
            str(to_us), "--speed", "max", "--port", str(port), "--wait-clients", str(clients)]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    samples: list[float] = []
    try:
        wait_port(port, proc)
        result: list[tuple[int, float]] = []
        import threading

        th = threading.Thread(target=lambda: result.append(run_clients(f"http://127.0.0.1:{port}/trade-api/ws/v2",
                                                                       clients, tickers)))  # fmt: skip
        th.start()
        while th.is_alive():
            samples.append(rss_mb(proc.pid))
            th.join(0.25)
        n, secs = result[0]
        return n / secs, samples
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--deltas", type=int, default=300_000)
    ap.add_argument("--markets", type=int, default=50)
    ap.add_argument("--hours", type=float, default=6.0)
    args = ap.parse_args()
    with PostgresCluster() as cluster, tempfile.TemporaryDirectory(prefix="kalshictl-bench-replay-") as tmp:
        cluster.create_database("prod")
        with psycopg.connect(cluster.dsn("prod"), autocommit=True) as conn:
            migrate(conn, "production")
            ensure_role(conn, next(r for r in ROLES if r.name == "exporter"), PW, "prod")
        t0 = time.monotonic()
        from_us, to_us = fill(cluster.dsn("prod"), args.deltas, args.markets, args.hours)
        print(f"filled {args.deltas} deltas over {args.hours} h in {time.monotonic() - t0:.1f}s", flush=True)
        config = Path(tmp) / "exporter.yaml"
        dsn = cluster.dsn("prod", "exporter")
        config.write_text(f"exporter:\n  production:\n    dsn: {dsn}\n    password: env:KB_REPLAY_PW\n"
                          "    allow_insecure: true\n")  # fmt: skip
        os.environ["KB_REPLAY_PW"] = PW
        tickers = [f"KXBENCH-E{m // 5}-T{m % 5}" for m in range(args.markets)]
        ceil = ceiling(args.deltas)
        one, rss = replay(config, from_us, to_us, 1, tickers)
        ten, _ = replay(config, from_us, to_us, 10, tickers)
    q = max(1, len(rss) // 4)
    print(f"WebSocket send ceiling (aiohttp, 1 client, same frames): {ceil:,.0f} msg/s")
    print(f"replay --speed max, 1 client: {one:,.0f} msg/s ({one / ceil:.0%} of the ceiling)")
    print(f"replay --speed max, 10 clients: {ten:,.0f} msg/s in total ({ten / ceil:.0%} of the ceiling)")
    print(
        f"replay server RSS over {args.hours:g} h / {args.deltas:,} deltas: first quarter max {max(rss[:q]):.0f} MB, "
        f"last quarter max {max(rss[-q:]):.0f} MB, peak {max(rss):.0f} MB ({len(rss)} samples)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
