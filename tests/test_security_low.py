"""#15 Low items, each reproduced first: SCRAM verifier in the server log, password-in-DSN check failing open,
--remote-cidr pasted into pg_hba, --from after --to, over-long gatherer names, restart commands inheriting every
variable, the file secret store keeping old passwords and following a planted symlink."""

from __future__ import annotations

import json
import os
import sys

import psycopg
import pytest

from kalshictl.config import parse_settings
from kalshictl.db.dsn import dsn_has_password
from kalshictl.db.embedded import PostgresCluster, free_port
from kalshictl.db.roles import hba_lines, set_password
from kalshictl.errors import ConfigError
from tests.helpers import write_config
from tests.ops.util import kctl


def test_scram_verifier_is_not_logged_under_log_statement_ddl():
    cluster = PostgresCluster(settings={"log_statement": "'ddl'"})
    cluster.start()
    try:
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute("CREATE ROLE rotated LOGIN")
            conn.execute("CREATE TABLE ddl_marker (x int)")  # proves ddl statements are being logged
            set_password(conn, "rotated", "a-password-1")
            with psycopg.connect(cluster.dsn(), autocommit=False) as tx:  # also inside an open transaction
                set_password(tx, "rotated", "a-password-2")
                tx.commit()
        with psycopg.connect(cluster.dsn("postgres", "rotated"), password="a-password-2"):
            pass
        log = cluster.log_file.read_text(errors="replace")
        assert "CREATE TABLE ddl_marker" in log
        assert "SCRAM-SHA-256$" not in log and "ALTER ROLE" not in log
    finally:
        cluster.destroy()


def test_unparseable_dsn_fails_closed_without_echoing_it():
    dsn = "host=db.example user=g password='hunter2 dbname=x"  # unterminated quote
    assert dsn_has_password(dsn)
    with pytest.raises(ConfigError) as info:
        parse_settings({"gatherer": {"database": {"dsn": dsn}}}, environ={})
    assert "gatherer.database.dsn: not a valid libpq" in str(info.value) and "hunter2" not in str(info.value)


BAD_CIDRS = ["10.0.0.0/8\nhost all all 0.0.0.0/0 trust", "10.0.0.0/8 trust", "all", "", "10.0.0.1"]


@pytest.mark.parametrize("cidr", BAD_CIDRS)
def test_remote_cidr_is_validated_before_anything_happens(tmp_path, cidr):
    with pytest.raises(ConfigError, match="--remote-cidr"):
        hba_lines("gatherer", "kalshi_ts", cidr)
    closed = f"postgresql://gatherer@127.0.0.1:{free_port()}/kalshi_ts"
    cfg = write_config(tmp_path / "g.yaml", {"gatherer": {"database": {"dsn": closed, "admin_dsn": closed}}})
    out = kctl("init-db", "--config", str(cfg), "--target", "gatherer", "--remote-cidr", cidr)
    assert out.returncode == 2 and "--remote-cidr" in out.stderr, out.stderr  # not 4: no connection was tried
    assert hba_lines("gatherer", "kalshi_ts", "192.168.0.0/16")[3].split()[3] == "192.168.0.0/16"


@pytest.mark.parametrize("command", [["coverage"], ["book", "verify", "T-1"]])
def test_from_after_to_is_a_usage_error(tmp_path, command):
    closed = f"postgresql://exporter@127.0.0.1:{free_port()}/kalshi_prod"
    cfg = write_config(tmp_path / "e.yaml", {"exporter": {"production": {"dsn": closed, "allow_insecure": True}}})
    out = kctl(*command, "--config", str(cfg), "--from", "2026-02-01", "--to", "2026-01-01")
    assert out.returncode == 2 and "is after --to" in out.stderr, out.stderr


@pytest.mark.parametrize("name", ["g" * 65, "_rest", "bad name", "a\nb", ""])
def test_gatherer_names_fit_the_column_and_are_not_reserved(name):
    with pytest.raises(ConfigError, match="gatherer.name"):
        parse_settings({"gatherer": {"name": name, "database": {"dsn": "dbname=x"}}}, environ={})
    link = {"name": name, "database": {"dsn": "dbname=x", "allow_insecure": True}}
    with pytest.raises(ConfigError, match=r"deduplicator.gatherers.0.name"):
        parse_settings(
            {"deduplicator": {"production": {"dsn": "dbname=p", "allow_insecure": True}, "gatherers": [link]}},
            environ={},
        )
    assert parse_settings({"gatherer": {"name": "g" * 64, "database": {"dsn": "dbname=x"}}}, environ={})


def test_restart_commands_get_a_minimal_environment(tmp_path, monkeypatch):
    from kalshictl.config import DatabaseSettings
    from kalshictl.ops.rotation import RESTART_ENV, RotationTarget, run_restarts

    for name, value in {"AWS_SECRET_ACCESS_KEY": "k", "PGPASSWORD": "p", "KALSHI_X__Y": "z", "LANG": "C"}.items():
        monkeypatch.setenv(name, value)
    probe = tmp_path / "env.json"
    code = f"import json, os; json.dump(dict(os.environ), open({str(probe)!r}, 'w'))"
    db = DatabaseSettings(dsn="dbname=x")
    target = RotationTarget("u", None, db, db, restarts=[f"{sys.executable} -c {json.dumps(code)}"])  # type: ignore[arg-type]
    run_restarts(target, lambda *a: None)
    seen = json.loads(probe.read_text())
    assert set(seen) - {"LC_CTYPE"} <= RESTART_ENV and seen.get("LANG") == "C"  # (python may add LC_CTYPE)
    assert not {"AWS_SECRET_ACCESS_KEY", "PGPASSWORD", "KALSHI_X__Y"} & set(seen)


def test_file_store_prunes_old_versions_and_never_follows_a_planted_symlink(tmp_path):
    from kalshictl.secrets.filestore import FileSecretStore

    path = tmp_path / "pw.json"
    store = FileSecretStore(path)
    ids = [store.put(f"password-{i}") for i in range(5)]
    pending = store.put_pending("password-pending")
    assert set(store.versions()) == {ids[-1], ids[-2], pending}
    assert "password-0" not in path.read_text()
    assert store.current_value() == "password-4" and store.get_version(store.previous_version()) == "password-3"
    store.make_current(ids[-2])  # rollback keeps both ends
    assert store.current_value() == "password-3" and set(store.versions()) >= {ids[-1], ids[-2]}
    # an attacker with write access to the folder plants the old fixed temp name as a symlink to a victim
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    os.symlink(victim, tmp_path / "pw.json.tmp")
    store.put("password-5")
    assert victim.read_text() == "untouched" and store.current_value() == "password-5"
    assert oct(path.stat().st_mode & 0o777) == "0o600" and not path.is_symlink()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp") and p.name != "pw.json.tmp"]
