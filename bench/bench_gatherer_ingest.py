"""Sustained messages/s into PostgreSQL on one core: parser + router + COPY batch writer vs naive per-row INSERT.

Also p50/p99 receive-to-commit latency at a paced rate. Uses a throwaway local PostgreSQL cluster.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time

import psycopg

sys.path.insert(0, ".")
from bench.bench_parse import frames
from kalshictl.db.embedded import PostgresCluster
from kalshictl.db.migrate import migrate
from kalshictl.gatherer.metrics import GathererMetrics
from kalshictl.gatherer.router import Router
from kalshictl.gatherer.writers import ALL_TABLES, BatchWriter, WriterSet, now_us


class _Conn:  # the router only needs these attributes of a connection
    name, markets, trackers, last_exchange_ts, pending, global_gaps, kind = "bench", set(), {}, 0, {}, {}, "orderbook"


class LatencyWriter(BatchWriter):
    latencies: list[float]

    async def _write_batch(self, batch):  # type: ignore[override]
        await super()._write_batch(batch)
        t = now_us()
        self.latencies.extend((t - r[self.spec.time_index]) / 1000.0 for r in batch)


async def run_batch(dsn: str, data: list[bytes], pace: float | None) -> tuple[float, list[float]]:
    async def connect() -> psycopg.AsyncConnection:
        return await psycopg.AsyncConnection.connect(dsn)

    writers = {}
    for spec in ALL_TABLES:
        w = LatencyWriter(spec, connect, batch_rows=5000, flush_ms=50, max_buffer_rows=2_000_000)
        w.latencies = []
        writers[spec.name] = w
    ws = WriterSet(writers)
    ws.start()
    router = Router("bench", ws, GathererMetrics("bench"))
    conn = _Conn()
    t0 = time.perf_counter()
    for i, raw in enumerate(data):
        router.handle(conn, raw, now_us())  # type: ignore[arg-type]
        if pace and i % 100 == 99:
            await asyncio.sleep(max(0.0, t0 + (i + 1) / pace - time.perf_counter()))
        elif i % 2000 == 1999:
            await asyncio.sleep(0)
    await ws.flush_all()
    elapsed = time.perf_counter() - t0
    await ws.stop()
    lat = [x for w in writers.values() for x in w.latencies]
    return len(data) / elapsed, lat


def run_naive(dsn: str, data: list[bytes]) -> float:
    from kalshictl.kalshi.messages import OrderbookDelta, Parser

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


def main() -> int:
    with PostgresCluster() as cluster:
        for db in ("batch", "naive", "paced"):
            cluster.create_database(db)
            with psycopg.connect(cluster.dsn(db), autocommit=True) as c:
                migrate(c, "gatherer", flavor="partitioned")
        data = frames(100_000)
        rate, _ = asyncio.run(run_batch(cluster.dsn("batch"), data, None))
        naive = run_naive(cluster.dsn("naive"), data[:10_000])
        with psycopg.connect(cluster.dsn("batch")) as c:
            n = sum(c.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("orderbook_deltas", "tickers"))
            n += c.execute("SELECT count(DISTINCT trade_id) FROM trades").fetchone()[0]
        if n < 0.85 * len(data):
            print(f"invalid run: only {n} rows stored of {len(data)} messages")
            return 1
        _, lat = asyncio.run(run_batch(cluster.dsn("paced"), frames(30_000), 5000.0))
    q = statistics.quantiles(lat, n=100)
    print(
        f"ingest: {rate:,.0f} msgs/s into PostgreSQL (COPY batch writer) vs {naive:,.0f} msgs/s naive per-row "
        f"INSERT (x{rate / naive:.1f}), one core"
    )
    print(f"receive-to-commit latency at 5,000 msgs/s: p50 {q[49]:.1f} ms, p99 {q[98]:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
