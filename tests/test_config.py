"""Config validation: typed settings, key paths in errors, env overrides, secret references never printed."""

import subprocess
import sys

import pytest

from kalshictl.config import SecretRef, load_settings, parse_settings
from kalshictl.errors import ConfigError, SecretError

BASE = {
    "gatherer": {
        "name": "g1",
        "database": {"dsn": "postgresql://gatherer@127.0.0.1:5432/kalshi_ts", "password": "env:G_PW"},
    }
}


def test_defaults_and_types():
    s = parse_settings(BASE, environ={})
    g = s.gatherer
    assert g.websocket.connections == 150
    assert g.websocket.global_connections == 6 and g.websocket.orderbook_connections == 144
    assert isinstance(g.database.password, SecretRef)
    assert g.http.port == 8080


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"websocket": {"orderbook_connections": "many"}}, "gatherer.websocket.orderbook_connections: expected int"),
        ({"websocket": {"conections": 3}}, "gatherer.websocket.conections: unknown key"),
        ({"writer": {"flush_ms": 0}}, "gatherer.writer.flush_ms"),
        ({"database": {"dsn": "postgresql://u:hunter2@h/db"}}, "gatherer.database.dsn: must not contain a password"),
        ({"database": {"dsn": "postgresql://u@h/db", "password": "hunter2"}}, "gatherer.database.password: must be a"),
    ],
)
def test_errors_name_the_key_path(patch, message):
    data = {"gatherer": {**BASE["gatherer"], **patch}}
    if "database" in patch:
        data["gatherer"]["database"] = patch["database"]
    with pytest.raises(ConfigError) as info:
        parse_settings(data, environ={})
    assert message in str(info.value)
    assert "hunter2" not in str(info.value)


def test_missing_required_key():
    with pytest.raises(ConfigError, match=r"gatherer\.database: required key missing"):
        parse_settings({"gatherer": {"name": "x"}}, environ={})


def test_env_overrides():
    s = parse_settings(
        BASE, environ={"KALSHI_GATHERER__WEBSOCKET__ORDERBOOK_CONNECTIONS": "12", "KALSHI_GATHERER__NAME": "gatherer-7"}
    )
    assert s.gatherer.websocket.orderbook_connections == 12
    assert s.gatherer.name == "gatherer-7"
    with pytest.raises(ConfigError, match="gatherer.websocket.orderbook_connections: expected int"):
        parse_settings(BASE, environ={"KALSHI_GATHERER__WEBSOCKET__ORDERBOOK_CONNECTIONS": "lots"})


def test_secret_refs_resolve_late(tmp_path, monkeypatch):
    s = parse_settings(BASE, environ={})
    with pytest.raises(SecretError, match="G_PW is not set"):
        s.gatherer.database.password.resolve()
    monkeypatch.setenv("G_PW", "s3cret-value")
    assert s.gatherer.database.password.resolve() == "s3cret-value"
    assert "s3cret-value" not in repr(s)
    f = tmp_path / "pw"
    f.write_text("from-file\n")
    assert SecretRef(f"file:{f}").resolve() == "from-file"
    with pytest.raises(SecretError, match="file not found"):
        SecretRef(f"file:{tmp_path}/nope").resolve()


def test_bad_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("gatherer: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_settings(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "missing.yaml")


def test_cli_bad_config_exits_2_and_names_path(tmp_path):
    cfg = tmp_path / "g.yaml"
    cfg.write_text(
        "gatherer:\n  database:\n    dsn: postgresql://g@127.0.0.1/kalshi_ts\n"
        "  websocket:\n    orderbook_connections: lots\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "kalshictl", "migrate", "--config", str(cfg)], capture_output=True, text=True
    )
    assert proc.returncode == 2, proc.stderr
    assert "gatherer.websocket.orderbook_connections: expected int" in proc.stderr


def test_example_configs_are_valid():
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "deploy" / "config"
    files = sorted(folder.glob("*.yaml"))
    assert files, "deploy/config/*.yaml missing"
    for path in files:
        load_settings(path, environ={})
