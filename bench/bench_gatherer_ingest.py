"""Gatherer end to end on one core: WebSocket frames -> parser -> router -> binary-COPY batch writers -> PostgreSQL,
committed; each figure next to its ceilings and baseline from the same run.

* source: bench/wsframes.py (a separate process) sends the exchange's frame mix once, as fast as it is read;
* ingest: the gatherer's WebSocket stack (aiohttp) read loop feeding the real Router, the real WsConnection and the
  real writers (benchmarks drive the real objects: if the router or the connection changes shape, this fails loudly:
  any error logged while routing invalidates the run);
* ceilings (same frames, same run): WebSocket receive of the same stack, ``orjson.loads`` of the frames, binary COPY
  of the same delta rows into an unindexed table and into the keyed ``orderbook_deltas``;
* baseline: naive per-row INSERT of the parsed deltas;
* latency: receive -> commit per row, p50/p99, at full speed and paced at 5,000 msgs/s.

``--profile`` prints the top of a cProfile of the full-speed run. Exits non-zero only if a run was invalid.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import dataclasses
import io
import logging
import pstats
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.bench_parse import frames
from bench.bench_ws_receive import free_port, measure
from kalshictl.config import WebSocketSettings
from kalshictl.db.embedded import PostgresCluster
from kalshictl.db.migrate import migrate
from kalshictl.gatherer.connections import ConnectionPool
from kalshictl.gatherer.gaps import GapLog
from kalshictl.gatherer.metrics import GathererMetrics
from kalshictl.gatherer.router import Router
from kalshictl.gatherer.writers import (
    BatchWriter,
    WriterGroup,
    WriterSet,
    column_types,
    make_writer,
    now_us,
)
from kalshictl.kalshi.messages import OrderbookDelta, Parser
from kalshictl.schema import DELTAS, EVENT_TABLES

ROOT = Path(__file__).resolve().parent.parent


async def _no_database() -> psycopg.AsyncConnection:
    raise RuntimeError("the bench's gap log has no database")


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class LatencyWriter(BatchWriter):
    """The real writer, also recording each committed row's receive -> commit latency."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.latencies: list[float] = []

    async def _write_batch(self, batch):  # type: ignore[override]
        await super()._write_batch(batch)
        t = now_us()
        ti = self.spec.clock_index
        self.latencies.extend((t - r[ti]) / 1000.0 for r in batch)


def source(n_frames: int, pace: float = 0.0) -> tuple[subprocess.Popen, str]:
    """Start the frame source (frames(n) sent once per connection)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "wsframes.py"), str(port), str(n_frames), "1"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc, f"ws://127.0.0.1:{port}/trade-api/ws/v2"


async def ingest(
    dsn: str, url: str, pace: float = 0.0, delta_writers: int | None = None
) -> tuple[int, float, list[float], float]:
    """Receive every frame of one connection, route and commit it; returns (frames, seconds, latencies ms, CPU s of
    this process). ``delta_writers`` overrides the writer count of the tables written by several writers (the deltas,
    ``Table.writers``)."""
    import aiohttp

    async def connect() -> psycopg.AsyncConnection:
        return await psycopg.AsyncConnection.connect(dsn)

    writers: dict[str, Any] = {}
    parts: list[LatencyWriter] = []
    for spec in EVENT_TABLES:
        if spec.writers > 1 and delta_writers is not None:
            spec = dataclasses.replace(spec, writers=delta_writers)
        w = make_writer(spec, connect, batch_rows=5000, flush_ms=50, cls=LatencyWriter)
        writers[spec.name] = w
        parts.extend(w.parts if isinstance(w, WriterGroup) else [w])  # type: ignore[arg-type]
    ws_set = WriterSet(writers)
    ws_set.start()
    metrics = GathererMetrics("bench")
    gaplog = GapLog("bench", _no_database, metrics=metrics)  # never started: a window would stay in memory
    router = Router("bench", ws_set, metrics, gaplog)
    # the gatherer's own pool (shipped websocket defaults), never started: this bench reads the socket itself
    pool = ConnectionPool(
        WebSocketSettings(), url, metrics, on_open=router.on_open, on_frame=router.handle, on_close=router.on_close
    )
    conn = pool.book_conns[0]
    n = 0
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url, autoping=False, max_msg_size=64 * 1024 * 1024) as ws:
            text = aiohttp.WSMsgType.TEXT
            t0 = time.perf_counter()
            cpu0 = time.process_time()
            handle = router.handle
            while True:
                msg = await ws.receive()
                if msg.type != text:
                    break
                handle(conn, msg.data, now_us())
                n += 1
                if pace and n % 100 == 0:
                    await asyncio.sleep(max(0.0, t0 + n / pace - time.perf_counter()))
            await ws_set.flush_all()
            elapsed = time.perf_counter() - t0
            cpu = time.process_time() - cpu0
    await ws_set.stop()
    return n, elapsed, [x for w in parts for x in w.latencies], cpu


def run_ingest(
    dsn: str, n_frames: int, pace: float = 0.0, profile: bool = False
) -> tuple[int, float, list[float], float]:
    proc, url = source(n_frames)
    try:
        if profile:
            prof = cProfile.Profile()
            result = prof.runcall(asyncio.run, ingest(dsn, url, pace))
            out = io.StringIO()
            pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(18)
            print("\n".join(line for line in out.getvalue().splitlines() if line.strip())[:6000])
            return result
        return asyncio.run(ingest(dsn, url, pace))
    finally:
        proc.terminate()
        proc.wait(10)


def delta_rows(data: list[bytes]) -> list[tuple]:
    parser = Parser()
    rows = []
    for i, raw in enumerate(data):
        d = parser.parse(raw)
        if isinstance(d, OrderbookDelta):
            rows.append((d.exchange_ts, now_us(), d.ticker, d.side, d.price, d.size_delta, i, d.seq, d.sid))
    return rows


def copy_ceiling(dsn: str, rows: list[tuple], table: str, connections: int = 1, batch: int = 5000) -> float:
    """Binary COPY of ``rows`` (deltas) into ``table``, rows/s: batches of ``batch`` rows, one transaction each, dealt
    in turns to ``connections`` connections writing concurrently (the gatherer's deltas use DELTAS.writers)."""

    async def one(conn: psycopg.AsyncConnection, types: list[int], parts: list[list[tuple]]) -> None:
        sql = f"COPY {table} ({', '.join(DELTAS.gatherer_columns)}) FROM STDIN (FORMAT BINARY)"
        for part in parts:
            async with conn.transaction():
                async with conn.cursor() as cur:
                    async with cur.copy(sql) as copy:
                        copy.set_types(types)
                        for r in part:
                            await copy.write_row(r)

    async def run() -> float:
        conns = [await psycopg.AsyncConnection.connect(dsn, autocommit=True) for _ in range(connections)]
        try:
            types = await column_types(conns[0], "orderbook_deltas", DELTAS.gatherer_columns)
            batches = [rows[i : i + batch] for i in range(0, len(rows), batch)]
            t0 = time.perf_counter()
            await asyncio.gather(*(one(c, types, batches[k::connections]) for k, c in enumerate(conns)))
            return len(rows) / (time.perf_counter() - t0)
        finally:
            for c in conns:
                await c.close()

    return asyncio.run(run())


def run_naive(dsn: str, data: list[bytes]) -> float:
    parser = Parser()
    t0 = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        for i, raw in enumerate(data):
            d = parser.parse(raw)
            if isinstance(d, OrderbookDelta):
                conn.execute(
                    "INSERT INTO orderbook_deltas (exchange_ts, received_at, ticker, side, price, size_delta,"
                    " occurrence, seq, sid) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT DO NOTHING",
                    (d.exchange_ts, now_us(), d.ticker, d.side, d.price, d.size_delta, i, d.seq, d.sid),
                )
    return len(data) / (time.perf_counter() - t0)


def stored(dsn: str) -> int:
    with psycopg.connect(dsn) as c:
        return sum(
            c.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("orderbook_deltas", "tickers", "trades")
        )


def q(lat: list[float]) -> tuple[float, float]:
    qs = statistics.quantiles(lat, n=100) if len(lat) >= 2 else [0.0] * 99
    return qs[49], qs[98]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=200_000)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    errors = _Errors()
    logging.getLogger("kalshictl").addHandler(errors)
    n = args.frames
    data = frames(n)
    ok = True
    with PostgresCluster() as cluster:
        for db in ("e2e", "paced", "naive", "ceiling"):
            cluster.create_database(db)
            with psycopg.connect(cluster.dsn(db), autocommit=True) as c:
                migrate(c, "gatherer", flavor="partitioned")
        with psycopg.connect(cluster.dsn("ceiling"), autocommit=True) as c:
            c.execute("CREATE TABLE plain_deltas (LIKE orderbook_deltas INCLUDING DEFAULTS)")
        # ceilings, same frames
        proc, url = source(n)
        try:
            ws_ceiling = measure("aiohttp", False, url, 1.5)
        finally:
            proc.terminate()
            proc.wait(10)
        t0 = time.perf_counter()
        for f in data:
            orjson.loads(f)
        decode_ceiling = n / (time.perf_counter() - t0)
        rows = delta_rows(data)
        copy_plain = copy_ceiling(cluster.dsn("ceiling"), rows, "plain_deltas")
        copy_keyed = copy_ceiling(cluster.dsn("ceiling"), rows, "orderbook_deltas")
        with psycopg.connect(cluster.dsn("ceiling"), autocommit=True) as c:
            c.execute("TRUNCATE orderbook_deltas")
        copy_keyed_n = copy_ceiling(cluster.dsn("ceiling"), rows, "orderbook_deltas", connections=DELTAS.writers)
        # the figure
        got, elapsed, lat, cpu = run_ingest(cluster.dsn("e2e"), n, profile=args.profile)
        rate = got / elapsed
        n_stored = stored(cluster.dsn("e2e"))
        ok &= got == n and n_stored == n
        naive = run_naive(cluster.dsn("naive"), data[:10_000])
        _, _, lat_paced, _ = run_ingest(cluster.dsn("paced"), 30_000, pace=5000.0)
    if errors.records:
        ok = False
        print(f"invalid run: {len(errors.records)} errors logged, first: {errors.records[0].getMessage()}")
    if not ok:
        print(f"invalid run: {got} of {n} frames received, {n_stored} stored")
        return 1
    p50, p99 = q(lat)
    pp50, pp99 = q(lat_paced)
    print(
        f"ingest: {rate:,.0f} msgs/s WS -> PostgreSQL committed, one core (aiohttp + msgspec parser + binary COPY);"
        f" x{rate / ws_ceiling:.2f} of the WS receive ceiling {ws_ceiling:,.0f} frames/s,"
        f" x{rate / decode_ceiling:.2f} of orjson.loads {decode_ceiling:,.0f}/s;"
        f" x{rate / naive:.1f} of naive per-row INSERT {naive:,.0f} msgs/s"
    )
    print(
        f"write ceilings (same delta rows): binary COPY unindexed {copy_plain:,.0f} rows/s,"
        f" keyed orderbook_deltas {copy_keyed:,.0f} rows/s on one connection,"
        f" {copy_keyed_n:,.0f} rows/s on {DELTAS.writers} (the gatherer's deltas writers; ingest deltas"
        f" x{rate * len(rows) / n / copy_keyed_n:.2f} of it)"
    )
    print(
        f"gatherer process CPU: {got / cpu:,.0f} msgs per CPU-second (receive + parse + route + COPY client side;"
        f" {cpu / elapsed:.0%} of one core used over the run: the rest is waiting for PostgreSQL)"
    )
    print(f"receive-to-commit latency at full speed: p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    print(f"receive-to-commit latency at 5,000 msgs/s: p50 {pp50:.1f} ms, p99 {pp99:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
