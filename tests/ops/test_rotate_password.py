"""`kalshictl rotate-password` on a real PostgreSQL (log_statement=all) with moto's Secrets Manager server and the
file store: new password works, old rejected, previous version kept, no plaintext anywhere; --rollback restores."""

from __future__ import annotations

import json
import os
import stat
import sys

import psycopg
import pytest

from kalshictl.db.embedded import PostgresCluster
from kalshictl.db.roles import set_password
from kalshictl.secrets import resolve_secret
from kalshictl.secrets.filestore import FileSecretStore
from tests.helpers import write_config
from tests.ops.util import AWS_ENV, kctl

OLD = "old-Pa55word-for-rotation-test"


@pytest.fixture(scope="module")
def _module_cluster():
    cluster = PostgresCluster(settings={"log_statement": "'all'"})
    cluster.start()
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute("CREATE ROLE deduplicator LOGIN")
    yield cluster
    cluster.destroy()


@pytest.fixture
def logged_cluster(_module_cluster):
    """A cluster logging every statement, with a `deduplicator` role whose password is OLD."""
    with psycopg.connect(_module_cluster.dsn(), autocommit=True) as conn:
        set_password(conn, "deduplicator", OLD)
    return _module_cluster


def logs_in(cluster, password: str) -> bool:
    try:
        with psycopg.connect(cluster.dsn("postgres", "deduplicator"), password=password, passfile=os.devnull):
            return True
    except psycopg.OperationalError as exc:
        assert "password authentication failed" in str(exc)
        return False


def restart_probe(path) -> str:
    """A restart command (no shell) that records its own argv and environment."""
    code = f"import json,os,sys; json.dump({{'argv': sys.argv, 'env': dict(os.environ)}}, open({str(path)!r}, 'a'))"
    return f"{sys.executable} -c {json.dumps(code)}"


def assert_no_plaintext(cluster, *texts: str, passwords: tuple[str, ...]) -> None:
    log = cluster.log_file.read_text(errors="replace")
    assert "statement: " in log, "log_statement=all is not in effect"
    assert "ALTER ROLE" not in log and "SCRAM-SHA-256$" not in log  # not even the verifier (#15)
    for pw in passwords:
        assert pw not in log
        for text in texts:
            assert pw not in text


def test_rotate_and_rollback_with_aws_secrets_manager(logged_cluster, moto_endpoint, sm_client, tmp_path, monkeypatch):
    sm_client.create_secret(Name="kalshi-data/test/rds-password", SecretString=OLD)
    env = {**AWS_ENV, "AWS_ENDPOINT_URL": moto_endpoint}
    probe = tmp_path / "restart.json"
    args = ["--user", "deduplicator", "--secret", "kalshi-data/test/rds-password", "--store", "aws"]
    args += ["--admin-dsn", logged_cluster.dsn(), "--allow-insecure"]
    proc = kctl("rotate-password", *args, "--restart", restart_probe(probe), "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert [s["step"] for s in result["steps"]] == [
        "read-current", "check-current", "generate", "stage", "alter-role", "promote", "restart", "verify",
    ]  # fmt: skip
    new = sm_client.get_secret_value(SecretId="kalshi-data/test/rds-password", VersionStage="AWSCURRENT")
    previous = sm_client.get_secret_value(SecretId="kalshi-data/test/rds-password", VersionStage="AWSPREVIOUS")
    new_pw = new["SecretString"]
    assert new_pw != OLD and len(new_pw) >= 40 and previous["SecretString"] == OLD
    assert result["current_version"] == new["VersionId"] and result["previous_version"] == previous["VersionId"]
    assert logs_in(logged_cluster, new_pw) and not logs_in(logged_cluster, OLD)
    for key, value in env.items():  # services resolve `aws-sm:` references to the new current version
        monkeypatch.setenv(key, value)
    assert resolve_secret("aws-sm:kalshi-data/test/rds-password") == new_pw
    restart_seen = probe.read_text()
    assert "argv" in restart_seen
    assert_no_plaintext(logged_cluster, proc.stdout, proc.stderr, restart_seen, passwords=(OLD, new_pw))

    back = kctl("rotate-password", *args, "--rollback", env=env)
    assert back.returncode == 0, back.stderr
    assert logs_in(logged_cluster, OLD) and not logs_in(logged_cluster, new_pw)
    current = sm_client.get_secret_value(SecretId="kalshi-data/test/rds-password", VersionStage="AWSCURRENT")
    assert current["SecretString"] == OLD and resolve_secret("aws-sm:kalshi-data/test/rds-password") == OLD
    assert_no_plaintext(logged_cluster, back.stdout, back.stderr, passwords=(OLD, new_pw))


def test_rotate_with_file_store_failed_restart_then_rollback(logged_cluster, tmp_path):
    secret_path = tmp_path / "rds-password.json"
    first = FileSecretStore(secret_path).put(OLD)
    cfg = write_config(
        tmp_path / "dedup.yaml",
        {
            "deduplicator": {
                "production": {
                    "dsn": logged_cluster.dsn("postgres", "deduplicator"),
                    "password": f"file:{secret_path}",
                    "admin_dsn": logged_cluster.dsn(),
                    "allow_insecure": True,
                },
                "gatherers": [
                    {"name": "g1", "database": {"dsn": "host=127.0.0.1 dbname=kalshi_ts", "allow_insecure": True}}
                ],
            },
            "roles": {"deduplicator": f"file:{secret_path}"},
        },
    )
    ok = kctl("rotate-password", "--user", "deduplicator", "--config", str(cfg))
    assert ok.returncode == 0, ok.stderr
    store = FileSecretStore(secret_path)
    new_pw = store.current_value()
    assert stat.S_IMODE(secret_path.stat().st_mode) == 0o600
    assert store.previous_version() == first and store.get_version(first) == OLD and len(store.versions()) == 2
    assert logs_in(logged_cluster, new_pw) and not logs_in(logged_cluster, OLD)
    assert_no_plaintext(logged_cluster, ok.stdout, ok.stderr, passwords=(OLD, new_pw))

    # a rotation whose restart fails: the error names the step and what to run next; state stays consistent
    failed = kctl("rotate-password", "--user", "deduplicator", "--config", str(cfg), "--restart", "false")
    assert failed.returncode == 1
    assert "step restart 1/1 failed: `false` exited 1" in failed.stderr
    assert "--rollback" in failed.stderr and "--restart false" in failed.stderr
    newest = FileSecretStore(secret_path).current_value()
    assert logs_in(logged_cluster, newest) and not logs_in(logged_cluster, new_pw)

    back = kctl("rotate-password", "--user", "deduplicator", "--config", str(cfg), "--rollback", "--json")
    assert back.returncode == 0, back.stderr
    assert logs_in(logged_cluster, new_pw) and not logs_in(logged_cluster, newest)
    assert FileSecretStore(secret_path).current_value() == new_pw
    assert_no_plaintext(logged_cluster, failed.stdout, failed.stderr, back.stdout, passwords=(OLD, new_pw, newest))


def test_interrupted_rotation_rolls_back_to_the_current_version(logged_cluster, tmp_path):
    """A pending version whose promotion never happened (simulated): --rollback puts the store's current back."""
    secret_path = tmp_path / "s.json"
    store = FileSecretStore(secret_path)
    store.put(OLD)
    store.put_pending("half-rotated-Pa55word")
    with psycopg.connect(logged_cluster.dsn(), autocommit=True) as conn:
        set_password(conn, "deduplicator", "half-rotated-Pa55word")
    args = [
        "--user",
        "deduplicator",
        "--secret",
        f"file:{secret_path}",
        "--admin-dsn",
        logged_cluster.dsn(),
        "--allow-insecure",
    ]
    stale = kctl("rotate-password", *args)
    assert stale.returncode == 1 and "step check-current failed" in stale.stderr and "--rollback" in stale.stderr
    back = kctl("rotate-password", *args, "--rollback")
    assert back.returncode == 0, back.stderr
    assert logs_in(logged_cluster, OLD) and FileSecretStore(secret_path).pending_version() is None


def test_rotating_as_root_keeps_the_store_file_owner_and_group(logged_cluster, tmp_path):
    """The service user must read its new password after the restart: the store keeps its owner, group and 0600."""
    import pwd

    if os.geteuid() != 0:
        pytest.skip("needs root to give the file to another user")
    service = pwd.getpwnam("nobody")
    secret_path = tmp_path / "svc-password.json"
    FileSecretStore(secret_path).put(OLD)
    os.chown(secret_path, service.pw_uid, service.pw_gid)
    args = ["--user", "deduplicator", "--secret", f"file:{secret_path}", "--admin-dsn", logged_cluster.dsn()]
    ok = kctl("rotate-password", *args, "--allow-insecure")
    assert ok.returncode == 0, ok.stderr
    st = secret_path.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (service.pw_uid, service.pw_gid, 0o600)
    new_pw = FileSecretStore(secret_path).current_value()
    assert new_pw != OLD and logs_in(logged_cluster, new_pw)
    back = kctl("rotate-password", *args, "--allow-insecure", "--rollback")
    assert back.returncode == 0, back.stderr
    assert (secret_path.stat().st_uid, secret_path.stat().st_gid) == (service.pw_uid, service.pw_gid)
