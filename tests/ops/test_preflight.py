"""`kalshictl preflight` on a real cluster set up by init-db + migrate: passes, then reports a revoked grant."""

from __future__ import annotations

import json

import psycopg

from kalshictl.config import load_settings
from kalshictl.db import migrate as mig
from kalshictl.db.connect import connect
from kalshictl.ops.init_db import init_database
from tests.helpers import write_config
from tests.ops.util import kctl

ENV = {"PF_GATHERER_PW": "pf-g-1", "PF_READER_PW": "pf-r-1", "PF_DEDUP_PW": "pf-d-1", "PF_EXPORTER_PW": "pf-e-1"}


def _config(tmp_path, cluster, health_url):
    return write_config(
        tmp_path / "all.yaml",
        {
            "gatherer": {
                "database": {
                    "dsn": cluster.dsn("pf_ts", "gatherer"),
                    "password": "env:PF_GATHERER_PW",
                    "admin_dsn": cluster.dsn("pf_ts", "postgres"),
                }
            },
            "deduplicator": {
                "production": {
                    "dsn": cluster.dsn("pf_prod", "deduplicator"),
                    "password": "env:PF_DEDUP_PW",
                    "admin_dsn": cluster.dsn("pf_prod", "postgres"),
                    "allow_insecure": True,
                },
                "gatherers": [
                    {
                        "name": "gatherer-1",
                        "health_url": health_url,
                        "database": {
                            "dsn": cluster.dsn("pf_ts", "dedup_reader"),
                            "password": "env:PF_READER_PW",
                            "allow_insecure": True,
                        },
                    }
                ],
            },
            "roles": {
                "gatherer": "env:PF_GATHERER_PW",
                "dedup_reader": "env:PF_READER_PW",
                "deduplicator": "env:PF_DEDUP_PW",
                "exporter": "env:PF_EXPORTER_PW",
            },
        },
    )


def test_preflight_passes_then_reports_a_missing_grant(pg_cluster_factory, health_service, tmp_path, monkeypatch):
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    cluster = pg_cluster_factory()
    gatherer = health_service("healthy")
    cfg = _config(tmp_path, cluster, gatherer.url + "/health")
    settings = load_settings(cfg)
    for target, db in (("gatherer", settings.gatherer.database), ("production", settings.deduplicator.production)):
        init_database(settings, target, db, timescale=False)
        with connect(db, admin=True, autocommit=True) as conn:
            mig.migrate(conn, target)

    ok = kctl("preflight", "--config", str(cfg), "--json", env=ENV)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    checks = json.loads(ok.stdout)["checks"]
    kinds = {c["check"] for c in checks}
    assert {"config valid", "secret resolvable", "database reachable", "migrations current", "role and grants"} <= kinds
    assert {"health endpoint reachable", "at least one gatherer healthy"} <= kinds
    assert sum(c["check"] == "role and grants" for c in checks) == 4

    with psycopg.connect(cluster.dsn("pf_prod"), autocommit=True) as conn:
        conn.execute("REVOKE INSERT ON sync_cursors FROM deduplicator")
    bad = kctl("preflight", "--config", str(cfg), env=ENV)
    assert bad.returncode == 1
    assert "no INSERT on sync_cursors" in bad.stdout and "fail" in bad.stdout
    assert "1 check(s) failed" in bad.stderr

    # a privilege too many fails too (not only a missing SELECT/INSERT)
    with psycopg.connect(cluster.dsn("pf_prod"), autocommit=True) as conn:
        conn.execute("GRANT INSERT ON sync_cursors TO deduplicator")
        conn.execute("GRANT DELETE, UPDATE, TRUNCATE ON trades TO exporter")
    extra = kctl("preflight", "--config", str(cfg), "--json", env=ENV)
    failed = {c["target"]: c["detail"] for c in json.loads(extra.stdout)["checks"] if not c["ok"]}
    assert extra.returncode == 1 and list(failed) == ["deduplicator.production: exporter"], failed
    assert all(f"has {p} on trades" in failed["deduplicator.production: exporter"] for p in ("DELETE", "TRUNCATE"))
    with psycopg.connect(cluster.dsn("pf_prod"), autocommit=True) as conn:
        conn.execute("REVOKE DELETE, UPDATE, TRUNCATE ON trades FROM exporter")

    # a secret that does not resolve and an unreachable gatherer are failures too, named by key path
    monkeypatch.delenv("PF_READER_PW")
    gone = kctl("preflight", "--config", str(cfg), "--json", env={k: v for k, v in ENV.items() if k != "PF_READER_PW"})
    failed = {c["target"]: c["detail"] for c in json.loads(gone.stdout)["checks"] if not c["ok"]}
    assert gone.returncode == 1
    assert "PF_READER_PW is not set" in failed["deduplicator.gatherers[0].database.password"]
    assert "roles.dedup_reader" in failed
    assert kctl("preflight", "--config", str(tmp_path / "missing.yaml")).returncode == 1
