"""init-db on a real PostgreSQL: roles with docs/security.md's privileges; read-only roles really cannot write."""

import json
import subprocess
import sys

import psycopg
import pytest

from tests.helpers import write_config

PASSWORDS = {
    "KT_GATHERER_PW": "g-pass-1",
    "KT_READER_PW": "r-pass-1",
    "KT_DEDUP_PW": "d-pass-1",
    "KT_EXPORTER_PW": "e-pass-1",
}


def _env():
    import os

    return {**os.environ, **PASSWORDS}


def _config(tmp_path, cluster, dbg, dbp):
    return write_config(
        tmp_path / "all.yaml",
        {
            "gatherer": {
                "database": {
                    "dsn": cluster.dsn(dbg, "gatherer"),
                    "password": "env:KT_GATHERER_PW",
                    "admin_dsn": cluster.dsn(dbg, "postgres"),
                }
            },
            "deduplicator": {
                "production": {
                    "dsn": cluster.dsn(dbp, "deduplicator"),
                    "password": "env:KT_DEDUP_PW",
                    "admin_dsn": cluster.dsn(dbp, "postgres"),
                    "allow_insecure": True,
                },
                "gatherers": [
                    {
                        "name": "gatherer-1",
                        "database": {
                            "dsn": cluster.dsn(dbg, "dedup_reader"),
                            "password": "env:KT_READER_PW",
                            "allow_insecure": True,
                        },
                    }
                ],
            },
            "roles": {
                "gatherer": "env:KT_GATHERER_PW",
                "dedup_reader": "env:KT_READER_PW",
                "deduplicator": "env:KT_DEDUP_PW",
                "exporter": "env:KT_EXPORTER_PW",
            },
        },
    )


def _kalshictl(*args):
    proc = subprocess.run([sys.executable, "-m", "kalshictl", *args], capture_output=True, text=True, env=_env())
    assert proc.returncode == 0, proc.stderr
    return proc


def test_init_db_roles_and_privileges(pg_cluster_factory, tmp_path):
    cluster = pg_cluster_factory()
    cfg = _config(tmp_path, cluster, "kalshi_ts", "kalshi_prod")
    for target in ("gatherer", "production"):
        out = json.loads(_kalshictl("init-db", "--config", str(cfg), "--target", target, "--json").stdout)
        assert out["database_created"] is True
        _kalshictl("migrate", "--config", str(cfg), "--target", target)
        # idempotent
        again = json.loads(_kalshictl("init-db", "--config", str(cfg), "--target", target, "--json").stdout)
        assert again["database_created"] is False and not any(r["created"] for r in again["roles"])
    text = _kalshictl("init-db", "--config", str(cfg), "--target", "gatherer").stdout
    assert "hostssl kalshi_ts       dedup_reader" in text

    def conn(db, user):
        return psycopg.connect(
            cluster.dsn(db, user),
            password=PASSWORDS[
                {
                    "gatherer": "KT_GATHERER_PW",
                    "dedup_reader": "KT_READER_PW",
                    "deduplicator": "KT_DEDUP_PW",
                    "exporter": "KT_EXPORTER_PW",
                }[user]
            ],
            autocommit=True,
        )

    with conn("kalshi_ts", "gatherer") as c:
        c.execute("INSERT INTO tickers (exchange_ts, received_at, ticker) VALUES (1, 1, 'X')")
    with conn("kalshi_prod", "deduplicator") as c:
        c.execute("INSERT INTO series (ticker, data) VALUES ('S', '{}')")
        c.execute("INSERT INTO sync_cursors (gatherer, table_name) VALUES ('g', 't')")
    for db, user, table in (("kalshi_ts", "dedup_reader", "tickers"), ("kalshi_prod", "exporter", "series")):
        with conn(db, user) as c:
            assert c.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 1
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute(f"DELETE FROM {table}")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute("CREATE TABLE sneaky (x int)")
    # tables created later (partitions by the maintenance function) are readable by the read-only role
    with conn("kalshi_ts", "dedup_reader") as c:
        assert c.execute("SELECT count(*) FROM tickers").fetchone()[0] == 1
    # wrong password is refused, and the error does not echo it
    with pytest.raises(psycopg.OperationalError) as info:
        psycopg.connect(cluster.dsn("kalshi_ts", "gatherer"), password="wrong-password-xyz")
    assert "wrong-password-xyz" not in str(info.value)


def test_init_db_bad_password_secret_is_clear(pg_cluster_factory, tmp_path):
    cluster = pg_cluster_factory()
    cfg = write_config(
        tmp_path / "g.yaml",
        {
            "gatherer": {
                "database": {
                    "dsn": cluster.dsn("kalshi_ts", "gatherer"),
                    "admin_dsn": cluster.dsn("kalshi_ts", "postgres"),
                }
            },
            "roles": {"gatherer": "env:KT_UNSET_VARIABLE", "dedup_reader": "env:KT_READER_PW"},
        },
    )
    proc = subprocess.run(
        [sys.executable, "-m", "kalshictl", "init-db", "--config", str(cfg)], capture_output=True, text=True, env=_env()
    )
    assert proc.returncode == 2
    assert "KT_UNSET_VARIABLE is not set" in proc.stderr
