"""A gatherer's own outage is data: after kill -9 and a restart, the downtime is a `restart` gap in sequence_gaps."""

from __future__ import annotations

import time

import httpx
import psycopg

from kalshictl.db.embedded import free_port
from kalshictl.local.processes import ManagedProcess, kalshictl_argv
from kalshictl.sim import SimConfig, SimExchange
from tests.gatherer.conftest import make_settings
from tests.helpers import write_config


def _wait_healthy(port: int, proc: ManagedProcess, timeout: float = 40.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.running, proc.log_tail()
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json().get("status") == "healthy":
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"gatherer not healthy within {timeout}s:\n{proc.log_tail()}")


def _restart_gaps(dsn: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT tickers, sid, from_ts, to_ts FROM sequence_gaps WHERE reason = 'restart' ORDER BY gap_id"
        ).fetchall()


def _wait_restart_gaps(dsn: str, n: int, timeout: float = 10.0) -> list[tuple]:
    """The gap row is committed by the batch writer shortly after the gatherer reports healthy."""
    deadline = time.monotonic() + timeout
    while True:
        gaps = _restart_gaps(dsn)
        if len(gaps) >= n or time.monotonic() > deadline:
            return gaps
        time.sleep(0.1)


def test_kill9_downtime_becomes_a_restart_gap(gatherer_dsn: str, tmp_path) -> None:
    port = free_port()
    sim = SimExchange.start_in_thread(SimConfig(markets=30, seed=17, rate=200))
    try:
        s = make_settings(gatherer_dsn, sim.ex.rest_url, sim.ex.ws_url)
        data = {"gatherer": s.model_dump(mode="json")}
        data["gatherer"]["http"]["port"] = port
        cfg = write_config(tmp_path / "g.yaml", data)
        proc = ManagedProcess("gatherer", kalshictl_argv("gather", "run", "--config", str(cfg)), tmp_path / "g.log")
        proc.start()
        _wait_healthy(port, proc)
        assert _restart_gaps(gatherer_dsn) == []  # a fresh database has no history to be missing
        time.sleep(2.5)  # recording; the heartbeat advances every second
        killed_at = time.time_ns() // 1000
        proc.kill()
        time.sleep(2.0)  # the outage being measured
        proc.start()
        _wait_healthy(port, proc)
        gaps = _wait_restart_gaps(gatherer_dsn, 1)
        resumed_at = time.time_ns() // 1000  # the gap row exists now, so its to_ts is at or before this
        assert len(gaps) == 1, gaps
        ticker, sid, from_ts, to_ts = gaps[0]
        assert ticker is None and sid is None  # the whole gatherer was blind
        # the window starts no later than the kill (at the last committed heartbeat) and ends when coverage resumed
        assert killed_at - 5_000_000 < from_ts <= killed_at
        assert killed_at + 2_000_000 <= to_ts <= resumed_at
        proc.terminate()
        assert proc.proc.returncode == 0
        # a graceful stop is remembered too: the next start records the window since receiving stopped
        proc.start()
        _wait_healthy(port, proc)
        assert len(_wait_restart_gaps(gatherer_dsn, 2)) == 2
        proc.terminate()
    finally:
        proc.kill()
        sim.stop()
