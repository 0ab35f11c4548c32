"""The Deduplicator service in-process: overlapping/partial views, live writes, late commits, health and status."""

from __future__ import annotations

import asyncio

import httpx

from kalshictl.dedup.service import Deduplicator
from kalshictl.dedup.status import collect_status
from tests.dedup.conftest import DedupEnv, now_us, trade_row, wait_until, write_misc, write_trades


async def _get(url: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=5) as client:
        return await client.get(url)


async def test_service_end_to_end_health_and_status(dedup_env: DedupEnv) -> None:
    base = now_us()
    truth = [trade_row(i, base) for i in range(900)]
    views = [truth[:500], truth[300:], [r for i, r in enumerate(truth) if i % 3 == 0]]
    g1, _g2, g3 = dedup_env.gatherers
    # half of each view before the service starts (a backlog), the rest while it runs
    for g, view in zip(dedup_env.gatherers, views, strict=True):
        with g.conn() as c:
            for k in range(0, len(view) // 2, 50):
                write_trades(c, view[k : k + 50])
    service = Deduplicator(dedup_env.settings())
    task = asyncio.create_task(service.run())
    await asyncio.wait_for(service.wait_started(), 30)
    late = g1.conn(autocommit=False)  # a gatherer transaction that commits late
    write_trades(late, [trade_row(5000, base)])
    for g, view in zip(dedup_env.gatherers, views, strict=True):
        with g.conn() as c:
            for k in range(len(view) // 2, len(view), 50):
                write_trades(c, view[k : k + 50])
            for i in range(30):
                write_misc(c, i, base)
    # (all three databases share one test cluster, so the open transaction holds every watermark back)
    assert dedup_env.count("trades") < 901
    late.commit()
    late.close()
    await wait_until(lambda: dedup_env.count("trades") == 901, 30, "all trades and the late commit")
    await wait_until(lambda: dedup_env.count("tickers") == 30 and dedup_env.count("orderbook_snapshots") == 90)

    resp = await _get(service.http_url + "/health")
    body = resp.json()
    assert resp.status_code == 200 and body["status"] == "healthy", body
    assert body["components"]["production_rds"] == "connected"
    assert body["components"]["gatherers"] == {f"gatherer-{i}": "connected" for i in (1, 2, 3)}
    assert body["components"]["sync"]["tables_syncing"] == 18
    assert body["components"]["sync"]["max_lag_seconds"] < 5

    # lag: an open transaction on gatherer-3 holds its watermark while a row received 40 s ago commits behind it
    blocker = g3.conn(autocommit=False)
    write_trades(blocker, [trade_row(7000, base)])
    with g3.conn() as c:
        write_trades(c, [trade_row(7001, base)], received_at=now_us() - 40_000_000)

    async def unhealthy() -> bool:
        r = await _get(service.http_url + "/health")
        return r.status_code == 503 and r.json()["details"]["sync"]["severity"] == "critical"

    await wait_until(unhealthy, 20, "lag > 30 s -> 503")
    blocker.commit()
    blocker.close()
    await wait_until(lambda: dedup_env.count("trades") == 903, 20, "rows behind the blocker")

    async def healthy_again() -> bool:
        return (await _get(service.http_url + "/health")).status_code == 200

    await wait_until(healthy_again, 20, "healthy again")

    metrics = (await _get(service.http_url + "/metrics")).text
    assert 'kalshi_dedup_rows_merged_total{gatherer="gatherer-1",table="trades"}' in metrics
    assert "kalshi_dedup_duplicates_absorbed_total" in metrics and "kalshi_dedup_sync_lag_seconds" in metrics
    ping = [ln for ln in metrics.splitlines() if ln.startswith("kalshi_dedup_production_ping_seconds ")]
    assert ping and 0 <= float(ping[0].split()[1]) < 5  # measured by the /health calls above

    status = await asyncio.to_thread(collect_status, dedup_env.settings())
    trades = [r for r in status["tables"] if r["table"] == "trades"]
    assert len(status["tables"]) == 18 and all(r["pending"] == 0 for r in trades), trades
    assert sum(r["rows_merged"] for r in trades) == 903
    assert sum(r["rows_read"] for r in trades) == 500 + 600 + 300 + 1 + 2

    service.request_stop()
    await asyncio.wait_for(task, 30)
    assert service.phase == "stopped"
    assert all(lp.pconn is None and lp.gconn is None for lp in service.loops)


def _partitions(prod, table: str) -> list[str]:
    rows = prod.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = %s::regclass AND c.relname NOT LIKE %s ORDER BY c.relname",
        (table, "%default%"),
    ).fetchall()
    return [r[0] for r in rows]


async def test_service_tops_up_production_partitions(dedup_env: DedupEnv) -> None:
    """Production's upcoming range partitions are created by the running deduplicator, not only by `migrate`."""
    with dedup_env.prod() as prod:
        before = _partitions(prod, "trades")
        assert before, "production trades is range-partitioned here (no TimescaleDB)"
        prod.execute(f"DROP TABLE {before[-1]}")  # the furthest upcoming partition goes missing
        assert _partitions(prod, "trades") == before[:-1]
    service = Deduplicator(dedup_env.settings())
    task = asyncio.create_task(service.run())
    await asyncio.wait_for(service.wait_started(), 30)

    def restored() -> bool:
        with dedup_env.prod() as prod:
            return _partitions(prod, "trades") == before

    await wait_until(restored, 30, "the dropped upcoming partition created again")
    service.request_stop()
    await asyncio.wait_for(task, 30)
