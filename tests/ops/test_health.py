"""`kalshictl health` against real /health servers (HealthServer) and real PostgreSQL clusters."""

from __future__ import annotations

import json

from kalshictl.db.embedded import PostgresCluster, free_port
from kalshictl.db.roles import set_password
from tests.helpers import write_config
from tests.ops.util import kctl, kctl_popen


def test_wait_any_passes_when_a_service_becomes_healthy(health_service):
    down, coming = health_service("unhealthy"), health_service("unhealthy")
    proc = kctl_popen("health", down.url, coming.url, "--any", "--wait", "30", "--interval", "0.2", "--json")
    try:
        assert coming.polled.wait(20), "the command never polled the service"
        coming.status = "healthy"
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    summary = json.loads(out)
    assert summary["ok"] and summary["mode"] == "any" and summary["attempts"] >= 1
    assert {r["target"]: r["status"] for r in summary["results"]}[coming.url + "/health"] == "healthy"


def test_wait_passes_at_once_when_one_is_healthy(health_service):
    up = health_service("healthy")
    proc = kctl("health", up.url, f"127.0.0.1:{free_port()}", "--any", "--wait", "10")
    assert proc.returncode == 0, proc.stderr
    assert "healthy" in proc.stdout and "unreachable" in proc.stdout


def test_wait_times_out_with_a_clear_error(health_service):
    sick = health_service("unhealthy")
    proc = kctl("health", sick.url, f"127.0.0.1:{free_port()}", "--any", "--wait", "2", "--interval", "0.2")
    assert proc.returncode == 6
    assert "timed out after 2s waiting for any of 2 target(s) to be healthy" in proc.stderr
    assert "unhealthy" in proc.stderr and "unreachable" in proc.stderr
    assert sick.requests >= 1


def test_requirements_and_exit_codes(health_service, tmp_path):
    good, meh = health_service("healthy"), health_service("degraded")
    assert kctl("health", good.url, meh.url).returncode == 3
    table = kctl("health", good.url, meh.url, "--require", "degraded")
    assert table.returncode == 0 and "degraded" in table.stdout and "200" in table.stdout
    assert kctl("health", good.url, meh.url, "--any").returncode == 0
    assert kctl("health", meh.url, "--require", "bogus").returncode == 2
    # URLs from a deduplicator config: its gatherers' health_url
    cfg = write_config(
        tmp_path / "dedup.yaml",
        {
            "deduplicator": {
                "production": {"dsn": "postgresql://deduplicator@127.0.0.1:5432/kalshi_prod", "allow_insecure": True},
                "gatherers": [
                    {
                        "name": f"g{i}",
                        "health_url": svc.url + "/health",
                        "database": {"dsn": "host=x dbname=y", "allow_insecure": True},
                    }
                    for i, svc in enumerate((good, meh))
                ],
            }
        },
    )
    summary = json.loads(kctl("health", "--config", str(cfg), "--require", "degraded", "--json").stdout)
    assert summary["ok"] and len(summary["results"]) == 2
    assert kctl("health", "--config", str(cfg)).returncode == 3


def test_check_db_latency_status_and_unreachable(pg_cluster):
    import psycopg

    out = kctl("health", "--check-db", pg_cluster.dsn(), "--allow-insecure", "--json")
    assert out.returncode == 0, out.stderr
    (result,) = json.loads(out.stdout)["results"]
    assert result["kind"] == "db" and result["status"] == "healthy" and 0 < result["latency_ms"] < 50
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS hc_probe")
        conn.execute("CREATE ROLE hc_probe LOGIN")
        set_password(conn, "hc_probe", "probe-pass-1")
    dsn = pg_cluster.dsn("postgres", "hc_probe")
    ok = kctl("health", "--check-db", dsn, "--allow-insecure", "--password-env", "HC_PW", env={"HC_PW": "probe-pass-1"})
    assert ok.returncode == 0, ok.stderr
    bad = kctl(
        "health",
        "--check-db",
        dsn,
        "--allow-insecure",
        "--password-env",
        "HC_PW",
        "--wait",
        "30",
        env={"HC_PW": "nope"},
    )
    assert bad.returncode == 4 and "password authentication failed" in bad.stderr  # no pointless waiting
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    down = kctl("health", "--check-db", dead, "--allow-insecure")
    assert down.returncode == 4 and "unreachable" in down.stderr
    assert kctl("health", "--check-db", dead, "--allow-insecure", "--wait", "1", "--interval", "0.2").returncode == 6
    assert kctl("health", "--check-db", "postgresql://u:secret@127.0.0.1/db").returncode == 2


def test_check_db_wait_until_the_server_starts():
    cluster = PostgresCluster().init()
    try:
        proc = kctl_popen(
            "health", "--check-db", cluster.dsn(), "--allow-insecure", "--wait", "60", "--interval", "0.2"
        )
        try:
            first = proc.stderr.readline()  # the command has tried and failed at least once
            assert "waiting (attempt 1)" in first
            cluster.start()
            out, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
        assert proc.returncode == 0, err
        assert "healthy" in out
    finally:
        cluster.destroy()
