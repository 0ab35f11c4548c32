"""The gatherer's storage timer (kalshictl/gatherer/storage.py) on a real database: retention runs on the one clock,
held partitions and a filling disk reach /health and /metrics."""

from __future__ import annotations

import httpx
import psycopg
import pytest
from prometheus_client import CollectorRegistry

from kalshictl import clock
from kalshictl.clock import ManualClock
from kalshictl.config import DiskSettings, parse_settings
from kalshictl.db.disk import DiskReading
from kalshictl.errors import ConfigError
from kalshictl.gatherer.storage import StorageMonitor
from kalshictl.health.disk import DiskWatch
from kalshictl.health.thresholds import gatherer_health
from tests.gatherer.conftest import make_settings, running_gatherer, until

DAY_US = 86_400_000_000


def _settings(dsn: str, **gatherer):
    data = {"gatherer": {"database": {"dsn": dsn}, **gatherer}}
    return parse_settings(data, environ={}).gatherer


def _healthy_report():
    return gatherer_health(db_connected=True, db_ping_ms=1.0, ws_connections=6, ws_healthy=6, ws_target=6, markets=10)


def _old_partition(dsn: str, now_us: int, days_ago: int) -> str:
    chunk = now_us // DAY_US - days_ago
    name = f"trades_p{chunk}"
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(
            f"CREATE TABLE {name} PARTITION OF trades FOR VALUES FROM ({chunk * DAY_US}) TO ({(chunk + 1) * DAY_US})"
        )
        c.execute(
            "INSERT INTO trades (trade_id, exchange_ts, received_at, ticker, price, size, taker_side)"
            " VALUES (gen_random_uuid(), %s, %s, 'T', 5000, 100, true)",
            (chunk * DAY_US + 1, chunk * DAY_US + 1),
        )
    return name


def _sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels or None)


async def test_the_timer_runs_on_the_one_clock_and_reports_held_partitions(gatherer_dsn: str) -> None:
    start = clock.now_us()
    held = _old_partition(gatherer_dsn, start, 5)  # never merged (no deduplicator): kept whatever its age
    manual = ManualClock(start)
    registry = CollectorRegistry()
    settings = _settings(
        gatherer_dsn,
        retention={"keep_days": 2, "interval_s": 3600},
        disk={"interval_s": 60, "path": "/", "warning_free_percent": 0.2, "critical_free_percent": 0.1},
    )
    with clock.installed(manual):
        mon = StorageMonitor(settings, registry)
        mon.start()
        try:

            def idle_after(runs: float):
                return lambda: (
                    manual.sleepers == 2 and _sample(registry, "kalshi_retention_runs_total", outcome="ok") == runs
                )

            await until(idle_after(1), 20, "the first pass at start")
            assert _sample(registry, "kalshi_retention_partitions_held", table="trades", reason="held_no_ledger") >= 1
            age = _sample(registry, "kalshi_retention_oldest_held_age_seconds")
            assert 4 * 86_400 <= age <= 5 * 86_400  # now - the partition's end, on the manual clock
            assert _sample(registry, "kalshi_db_disk_free_bytes") > 0  # statvfs of disk.path
            assert held in {p.partition for p in mon.last_run.held}
            report = mon.annotate(_healthy_report())  # 4+ days held, keep_days 2: 2 x keep_days reached
            assert report.status == "degraded" and report.details["retention"]["status"] == "degraded"
            assert any("not yet merged" in r for r in report.details["reasons"])

            await manual.advance(60)  # a disk tick: no retention pass before interval_s
            await until(idle_after(1), 20, "idle after a disk tick")
            await manual.advance(3540)
            await until(idle_after(2), 20, "the second pass an hour of clock time later")
        finally:
            await mon.stop()
    with psycopg.connect(gatherer_dsn) as c:  # still there: not merged
        assert c.execute("SELECT to_regclass(%s) IS NOT NULL", (held,)).fetchone()[0]


async def _read(dsn: str, **disk) -> tuple[DiskWatch, DiskReading | None]:
    watch = DiskWatch(DiskSettings(**disk), CollectorRegistry())
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        return watch, await watch.read(conn)


async def test_disk_thresholds_from_a_configured_volume_size(gatherer_dsn: str) -> None:
    with psycopg.connect(gatherer_dsn) as c:
        db_bytes = c.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    cases = [(db_bytes * 10, "healthy"), (int(db_bytes / 0.85), "degraded"), (int(db_bytes / 0.95), "unhealthy")]
    for size, expected in cases:
        watch, reading = await _read(gatherer_dsn, size_bytes=size)
        assert reading.source == "size_bytes" and reading.total_bytes == size
        report = watch.annotate(_healthy_report())
        assert (report.status, report.details["disk"]["status"]) == (expected, expected), (size, db_bytes)
        assert watch.free._value.get() == size - reading.database_bytes  # the metric is the reading


async def test_without_a_method_the_free_space_is_unknown_not_guessed(gatherer_dsn: str) -> None:
    watch, reading = await _read(gatherer_dsn)
    assert (reading.source, reading.free_bytes, reading.free_percent) == ("unknown", None, None)
    assert "disk.path" in reading.detail and reading.database_bytes > 0
    report = watch.annotate(_healthy_report())
    assert report.status == "healthy" and report.details["disk"]["detail"] == reading.detail


async def test_a_wrong_disk_path_is_reported(gatherer_dsn: str) -> None:
    watch, reading = await _read(gatherer_dsn, path="/no/such/dir")
    assert reading is None and "/no/such/dir" in watch.error
    assert watch.annotate(_healthy_report()).details["disk"]["error"] == watch.error


async def test_a_running_gatherer_reports_disk_and_retention(gatherer_dsn: str, sim_factory) -> None:
    with psycopg.connect(gatherer_dsn) as c:
        db_bytes = c.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    async with sim_factory(markets=20, seed=5, rate=50) as ex:
        async with running_gatherer(gatherer_dsn, ex, disk={"size_bytes": int(db_bytes * 1.02)}) as g:
            url = g.health_url

            async def unhealthy_for_disk() -> bool:
                async with httpx.AsyncClient() as client:
                    r = await client.get(url, timeout=5)
                body = r.json()
                return r.status_code == 503 and body["details"]["disk"]["status"] == "unhealthy"

            await until(unhealthy_for_disk, 20, "/health unhealthy for a disk under 10% free")
            async with httpx.AsyncClient() as client:
                body = (await client.get(url, timeout=5)).json()
                metrics = (await client.get(url.replace("/health", "/metrics"), timeout=5)).text
            assert body["details"]["retention"]["enabled"] is True and body["details"]["retention"]["keep_days"] == 7
            assert "kalshi_db_disk_free_bytes" in metrics and 'kalshi_retention_runs_total{outcome="ok"} 1.0' in metrics


def test_disk_thresholds_must_be_ordered() -> None:
    with pytest.raises(ConfigError, match="critical_free_percent"):
        make_settings(
            "postgresql://x@/y", "http://x", "ws://x", disk={"warning_free_percent": 5, "critical_free_percent": 10}
        )


def test_retention_run_prints_each_partition_and_a_summary(gatherer_dsn: str, tmp_path) -> None:
    import subprocess
    import sys

    from tests.helpers import write_config

    held = _old_partition(gatherer_dsn, clock.now_us(), 9)
    cfg = write_config(tmp_path / "g.yaml", {"gatherer": {"database": {"dsn": gatherer_dsn}}})
    cmd = [sys.executable, "-m", "kalshictl", "retention", "run", "--config", str(cfg), "--dry-run"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "held_no_ledger" in out.stdout and "retention: keep 7 days" in out.stdout
    assert f"trades/{held}: held_no_ledger" in out.stderr  # progress, one line per partition
    assert "would drop 0 partition(s)" in out.stderr and "held 1 (not merged)" in out.stderr
    bad = write_config(tmp_path / "d.yaml", {"log_level": "info"})
    out = subprocess.run([*cmd[:5], "--config", str(bad)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "gatherer: section missing" in out.stderr
    out = subprocess.run([*cmd, "--keep-days", "-1"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "--keep-days" in out.stderr
