"""Outages: a gatherer database stopped mid-run and restarted with a backlog; the deduplicator SIGKILLed."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys

import httpx
import pytest

from kalshictl.db.embedded import free_port
from kalshictl.dedup.service import Deduplicator
from tests.dedup.conftest import GDB, DedupEnv, make_db, now_us, trade_row, wait_until, write_trades
from tests.helpers import write_config


@pytest.mark.slow
async def test_gatherer_database_outage_never_blocks_the_others(dedup_env: DedupEnv, pg_cluster_factory) -> None:
    own = pg_cluster_factory()
    dedup_env.gatherers[1] = GDB("gatherer-2", own, make_db(own, "gatherer"))
    g1, g2, g3 = dedup_env.gatherers
    base = now_us()
    service = Deduplicator(dedup_env.settings())
    task = asyncio.create_task(service.run())
    await asyncio.wait_for(service.wait_started(), 30)
    for g in (g1, g2, g3):
        with g.conn() as c:
            write_trades(c, [trade_row(i, base) for i in range(0, 100)])
    await wait_until(lambda: dedup_env.count("trades") == 100, 20, "first 100")

    own.stop("immediate")  # gatherer-2's database goes away
    with g1.conn() as c:  # the others keep flowing meanwhile
        write_trades(c, [trade_row(i, base) for i in range(100, 200)])
    await wait_until(lambda: dedup_env.count("trades") == 200, 20, "g1 rows while g2 is down")
    await wait_until(lambda: not service.gatherer_ok["gatherer-2"], 20, "g2 reported disconnected")
    async with httpx.AsyncClient() as client:
        body = (await client.get(service.http_url + "/health")).json()
    assert body["status"] == "degraded" and body["components"]["gatherers"]["gatherer-2"] == "disconnected"

    own.start()  # back, with a backlog only it has
    with g2.conn() as c:
        for k in range(200, 20_200, 2000):
            write_trades(c, [trade_row(i, base) for i in range(k, k + 2000)])
    await wait_until(lambda: dedup_env.count("trades") == 20_200, 60, "g2 backlog")
    await wait_until(lambda: service.gatherer_ok["gatherer-2"], 20, "g2 reconnected")
    service.request_stop()
    await asyncio.wait_for(task, 30)
    with dedup_env.prod() as c:
        assert c.execute("SELECT count(DISTINCT trade_id) FROM trades").fetchone()[0] == 20_200


def _env() -> dict[str, str]:
    return {**os.environ}


@pytest.mark.slow
async def test_sigkill_and_restart_loses_and_duplicates_nothing(dedup_env: DedupEnv, tmp_path) -> None:
    port = free_port()
    cfg = write_config(tmp_path / "dedup.yaml", {"deduplicator": {**dedup_env.config(), "http": {"port": port}}})
    base = now_us()
    stop = asyncio.Event()

    async def writer() -> int:  # every gatherer sees every trade, in different transaction groupings
        i = 0
        while not stop.is_set():
            for n, g in enumerate(dedup_env.gatherers):
                step = 40 // (n + 1)
                with g.conn() as c:
                    for lo in range(i, i + 40, step):
                        write_trades(c, [trade_row(k, base) for k in range(lo, min(lo + step, i + 40))])
            i += 40
            await asyncio.sleep(0.02)
        return i

    def start() -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "kalshictl", "dedup", "run", "--config", str(cfg)],
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    async def healthy() -> bool:
        try:
            async with httpx.AsyncClient(timeout=2) as client:
                return (await client.get(f"http://127.0.0.1:{port}/health")).json()["status"] == "healthy"
        except (httpx.HTTPError, ValueError):
            return False

    wtask = asyncio.create_task(writer())
    proc = start()
    try:
        await wait_until(healthy, 60, "first run healthy")
        await wait_until(lambda: dedup_env.count("trades") > 2000, 60, "progress")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        await asyncio.sleep(0.3)  # the writers keep going while the deduplicator is dead
        proc = start()
        await wait_until(healthy, 60, "second run healthy")
        stop.set()
        total = await wtask
        await wait_until(lambda: dedup_env.count("trades") == total, 60, f"{total} trades")
    finally:
        stop.set()
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    assert proc.returncode == 0, err[-2000:]
    assert "shutdown complete" in err
    with dedup_env.prod() as c:
        merged = c.execute("SELECT sum(rows_merged) FROM sync_cursors WHERE table_name = 'trades'").fetchone()[0]
    assert merged == total  # every merged row counted once: no row was inserted twice
    out = subprocess.run(
        [sys.executable, "-m", "kalshictl", "dedup", "status", "--config", str(cfg), "--json"],
        capture_output=True,
        text=True,
        env=_env(),
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert all(r["pending"] == 0 for r in data["tables"])
    text = subprocess.run(
        [sys.executable, "-m", "kalshictl", "dedup", "status", "--config", str(cfg)],
        capture_output=True,
        text=True,
        env={**_env(), "COLUMNS": "200"},
    )
    assert text.returncode == 0 and "gatherer-3" in text.stdout and "orderbook_deltas" in text.stdout
