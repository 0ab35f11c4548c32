"""/health flips with connections and the database; DB outage recovery; SIGTERM of the real CLI loses nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

import httpx
import psycopg
import pytest

from kalshictl.db.embedded import free_port
from kalshictl.gatherer.service import Gatherer
from kalshictl.sim import SimConfig, SimExchange
from kalshictl.sim.ground_truth import load
from tests.gatherer.conftest import covered, db_gaps, db_keys, gt_keys, make_settings, migrate_gatherer, until
from tests.helpers import write_config


async def _health(url: str) -> tuple[int, str]:
    async with httpx.AsyncClient() as client:
        r = await client.get(url, timeout=5)
        return r.status_code, r.json()["status"]


async def test_health_flips_and_db_outage_recovers(pg_cluster_factory) -> None:
    cluster = pg_cluster_factory()
    cluster.create_database("g")
    dsn = cluster.dsn("g")
    migrate_gatherer(dsn)
    async with SimExchange(SimConfig(markets=40, seed=11, rate=300, paused=True)) as ex:
        g = Gatherer(make_settings(dsn, ex.rest_url, ex.ws_url), progress=False)
        task = asyncio.create_task(g.run())
        try:
            assert await g.wait_ready(30)
            url = g.health_url

            async def status_is(code: int, status: str) -> bool:
                return await _health(url) == (code, status)

            await until(lambda: status_is(200, "healthy"), 15, "healthy")
            body = (await httpx.AsyncClient().get(url)).json()
            assert set(body["components"]) == {"timescaledb", "websocket", "market_registry", "coverage"}
            assert body["components"]["websocket"] == {"connections": 6, "healthy": 6}
            metrics = (await httpx.AsyncClient().get(url.replace("/health", "/metrics"))).text
            assert "kalshi_gatherer_db_connected 1.0" in metrics and "kalshi_gatherer_db_ping_seconds " in metrics
            # take 2 of 6 connections away (exchange refuses reconnects): 4/6 is degraded (scaled 140/150, 100/150)
            ex.set_faults("refuse=1:0.2")
            for conn in g.manager.book_conns[:2]:
                conn.reconnect_now("test")
            await until(lambda: status_is(200, "degraded"), 10, "degraded")
            ex.drop_connections()
            await until(lambda: status_is(503, "unhealthy"), 10, "unhealthy")
            ex.set_faults("")
            await until(lambda: status_is(200, "healthy"), 15, "healthy again")
            # the database goes away while the exchange keeps trading: unhealthy, rows buffer
            ex.resume()
            await asyncio.to_thread(cluster.stop, "immediate")
            await until(lambda: status_is(503, "unhealthy"), 10, "unhealthy without the database")
            metrics = (await httpx.AsyncClient().get(url.replace("/health", "/metrics"))).text
            assert "kalshi_gatherer_db_connected 0.0" in metrics  # the alert rules' input
            await until(lambda: g.writers["orderbook_deltas"].failures > 0, 10, "writes failing")
            buffered = sum(g.writers.depth().values())
            await asyncio.to_thread(cluster.start)
            await until(lambda: status_is(200, "healthy"), 20, "healthy after the database returns")
            ex.pause()
            ex.flush()
            await until(lambda: sum(g.writers.depth().values()) == 0, 20, "buffers drained")
            await until(lambda: not g.router.sync.awaiting, 15, "resync finished")
        finally:
            g.request_stop()
            await asyncio.wait_for(task, 30)
        assert buffered > 0
        truth, stored, gaps = gt_keys(load(ex.ground_truth_path)), db_keys(dsn), db_gaps(dsn)
    for kind in truth:
        assert not (stored[kind] - truth[kind]), f"{kind}: rows not in the ground truth"
        missing = truth[kind] - stored[kind]
        assert all(covered(kind, k, gaps) for k in missing), f"{kind}: loss outside gap windows"
    # the outage itself lost nothing: the exchange connections stayed up, so every trade arrived and was stored
    assert stored["trade"] == truth["trade"]


@pytest.mark.slow
async def test_sigterm_of_the_cli_loses_nothing_received(gatherer_dsn: str, tmp_path) -> None:
    port = free_port()
    async with SimExchange(SimConfig(markets=40, seed=13, rate=300, paused=True)) as ex:
        s = make_settings(gatherer_dsn, ex.rest_url, ex.ws_url)
        data = {"gatherer": s.model_dump(mode="json")}
        data["gatherer"]["http"]["port"] = port
        data["gatherer"]["writer"]["flush_ms"] = 2000  # rows sit in the buffers when SIGTERM arrives
        cfg = write_config(tmp_path / "g.yaml", data)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "kalshictl", "gather", "run", "--config", str(cfg),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env,
        )  # fmt: skip
        try:

            async def healthy() -> bool:
                try:
                    return (await _health(f"http://127.0.0.1:{port}/health"))[1] == "healthy"
                except httpx.HTTPError:
                    return False

            await until(healthy, 40, "the CLI gatherer to become healthy", interval=0.2)
            ex.resume()
            await asyncio.sleep(1.5)  # workload while running
            cut_us = time.time_ns() // 1000 - 300_000  # everything emitted before this was received
            proc.send_signal(signal.SIGTERM)
            out, _ = await asyncio.wait_for(proc.communicate(), 40)
        finally:
            if proc.returncode is None:
                proc.kill()
        ex.pause()
        ex.flush()
        assert proc.returncode == 0, out.decode()[-2000:]
        assert b"shutdown complete" in out
        truth = gt_keys(load(ex.ground_truth_path))
    stored = db_keys(gatherer_dsn)
    for kind in truth:
        assert not (stored[kind] - truth[kind]), f"{kind}: rows not in the ground truth"
        if kind == "lifecycle":  # no time of its own to compare with the SIGTERM's
            continue
        ts_i = 2 if kind == "trade" else 1
        before = {k for k in truth[kind] if k[ts_i] <= cut_us}
        assert before, f"no {kind} events before SIGTERM"
        lost = [k for k in before if k not in stored[kind]]
        assert not lost, f"{kind}: {len(lost)} received events lost at SIGTERM: {lost[:3]}"
    with psycopg.connect(gatherer_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM orderbook_deltas").fetchone()[0] > 0


async def test_graceful_shutdown_writes_the_rows_and_gap_windows_still_queued(gatherer_dsn: str) -> None:
    """Rows a writer holds (its flush an hour away) and a gap window queued just before the stop are both in the
    database once ``run`` returns: shutdown flushes the table writers and the gap log, which sits beside them
    (docs/gatherer.md "Start-up", shutdown)."""
    from tests.gatherer.conftest import running_gatherer
    from tests.gatherer.test_writers import rows

    trade = rows()["trades"][0]
    async with SimExchange(SimConfig(markets=10, seed=12, rate=0, paused=True)) as ex:
        async with running_gatherer(gatherer_dsn, ex, writer={"flush_ms": 3_600_000}) as g:
            await g.gaplog.flush(10)
            assert g.writers["trades"].add(trade)
            wid = g.gaplog.record(channel="trade", reason="overflow", from_ts=1_000, to_ts=2_000)
            assert len(g.writers["trades"]) == 1 and len(g.gaplog) >= 1  # both still queued when the stop comes
    with psycopg.connect(gatherer_dsn) as conn:
        assert conn.execute("SELECT trade_id::text FROM trades").fetchall() == [(trade[0],)]
        got = conn.execute(
            "SELECT channel, reason, from_ts, to_ts FROM sequence_gaps WHERE instance_id = %s AND window_id = %s",
            (g.gaplog.instance_id, wid),
        ).fetchall()
    assert got == [("trade", "overflow", 1_000, 2_000)]
