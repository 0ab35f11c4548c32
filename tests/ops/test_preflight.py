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


def test_preflight_sees_partitions_columns_attributes_memberships_schema_and_secret_files(
    pg_cluster_factory, health_service, tmp_path, monkeypatch
):
    """What a per-table privilege check misses: each one fails preflight, naming the role and what it has."""
    import os

    from kalshictl.db.roles import ROLES, ensure_role

    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    cluster = pg_cluster_factory()
    cfg = _config(tmp_path, cluster, health_service("healthy").url + "/health")
    secret = tmp_path / "exporter-db-password"
    secret.write_text(ENV["PF_EXPORTER_PW"])
    secret.chmod(0o600)
    text = cfg.read_text().replace("env:PF_EXPORTER_PW", f"file:{secret}")
    cfg.write_text(text)
    settings = load_settings(cfg)
    for target, db in (("gatherer", settings.gatherer.database), ("production", settings.deduplicator.production)):
        init_database(settings, target, db, timescale=False)
        with connect(db, admin=True, autocommit=True) as conn:
            mig.migrate(conn, target, flavor="partitioned")
    ok = kctl("preflight", "--config", str(cfg), "--json", env=ENV)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    checks = json.loads(ok.stdout)["checks"]
    assert {c["check"] for c in checks} >= {"schema owner", "secret file private"}

    with psycopg.connect(cluster.dsn("pf_prod"), autocommit=True) as conn:
        part = conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'trades'::regclass ORDER BY 1 LIMIT 1"
        ).fetchone()[0]
        conn.execute(f'GRANT DELETE, TRUNCATE ON "{part}" TO deduplicator')
        conn.execute("GRANT UPDATE (ticker) ON trades TO exporter")
        conn.execute("GRANT CREATE ON SCHEMA public TO exporter")
        conn.execute("GRANT pg_execute_server_program TO deduplicator")
        conn.execute("ALTER ROLE exporter BYPASSRLS")
    secret.chmod(0o644)
    bad = kctl("preflight", "--config", str(cfg), "--json", env=ENV)
    assert bad.returncode == 1
    failed = {c["target"]: c["detail"] for c in json.loads(bad.stdout)["checks"] if not c["ok"]}
    dedup, exporter = failed["deduplicator.production: deduplicator"], failed["deduplicator.production: exporter"]
    for text in ("member of pg_execute_server_program", f"has DELETE on partition {part}", "has TRUNCATE on partition"):
        assert text in dedup, dedup
    for text in ("is BYPASSRLS", "has CREATE on schema public", "has UPDATE on columns of trades"):
        assert text in exporter, exporter
    assert "mode 0644" in failed["roles.exporter"], failed

    # init-db's role step puts every role back to exactly the policy
    secret.chmod(0o600)
    with psycopg.connect(cluster.dsn("pf_prod"), autocommit=True) as conn:
        for spec in ROLES:
            if spec.target == "production":
                ensure_role(conn, spec, None, "pf_prod")
    fixed = kctl("preflight", "--config", str(cfg), "--json", env=ENV)
    assert fixed.returncode == 0, [c for c in json.loads(fixed.stdout)["checks"] if not c["ok"]]
    assert os.stat(secret).st_mode & 0o777 == 0o600
