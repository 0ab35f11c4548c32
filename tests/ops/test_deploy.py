"""deploy/: systemd units (systemd-analyze verify or parsed), init scripts (shellcheck + run end to end against a real
cluster and real /health servers with a stub systemctl), pg_hba lines, Prometheus rules and the Grafana dashboard."""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import kalshictl
from kalshictl.db.roles import hba_lines
from kalshictl.health import thresholds as th
from tests.helpers import write_config

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
UNITS = {
    "gatherer": ("gather run", "/etc/kalshi/gatherer.yaml", "28G"),
    "deduplicator": ("dedup run", "/etc/kalshi/deduplicator.yaml", "14G"),
}


@pytest.fixture
def kalshictl_exe(tmp_path: Path) -> str:
    """An executable ``kalshictl`` that runs the code under test with the interpreter in use: never PATH's."""
    source_root = Path(kalshictl.__file__).resolve().parents[1]
    exe = tmp_path / "bin" / "kalshictl"
    exe.parent.mkdir()
    pythonpath = f"{shlex.quote(str(source_root))}${{PYTHONPATH:+:$PYTHONPATH}}"
    exe.write_text(f'#!/bin/sh\nPYTHONPATH={pythonpath} exec {shlex.quote(sys.executable)} -m kalshictl "$@"\n')
    exe.chmod(0o755)
    proc = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"{sys.executable} -m kalshictl does not run: {proc.stderr}"
    return str(exe)


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # keys are case-sensitive in systemd
    parser.read_string((DEPLOY / "systemd" / f"{name}.service").read_text())
    return parser


@pytest.mark.parametrize("name", sorted(UNITS))
def test_systemd_unit_has_the_seed_settings(name):
    command, config, memory = UNITS[name]
    unit = _unit(name)
    assert unit["Unit"]["StartLimitIntervalSec"] == "60" and unit["Unit"]["StartLimitBurst"] == "3"
    svc = unit["Service"]
    expected = {
        "Type": "simple",
        "User": "kalshi",
        "Group": "kalshi",
        "ExecStart": f"/opt/kalshi/venv/bin/kalshictl {command} --config {config}",
        "Restart": "always",
        "RestartSec": "10",
        "TimeoutStopSec": "30",
        "KillSignal": "SIGTERM",
        "NoNewPrivileges": "true",
        "ProtectSystem": "strict",
        "ProtectHome": "true",
        "ReadWritePaths": "/var/lib/kalshi",
        "LimitNOFILE": "65536",
        "MemoryMax": memory,
        "SyslogIdentifier": name,
    }
    assert {k: svc.get(k) for k in expected} == expected
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    if name == "gatherer":
        assert unit["Unit"]["Requires"] == "postgresql.service" and "postgresql.service" in unit["Unit"]["After"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify(tmp_path, kalshictl_exe):
    for name in UNITS:  # verify needs an executable ExecStart: point it at the kalshictl under test
        text = (DEPLOY / "systemd" / f"{name}.service").read_text()
        (tmp_path / f"{name}.service").write_text(text.replace("/opt/kalshi/venv/bin/kalshictl", kalshictl_exe))
    proc = subprocess.run(
        ["systemd-analyze", "verify", *(str(tmp_path / f"{n}.service") for n in UNITS)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert not [line for line in proc.stderr.splitlines() if ".service" in line], proc.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
@pytest.mark.parametrize("name", sorted(UNITS))
def test_systemd_units_are_hardened(name, tmp_path):
    """``systemd-analyze security --offline=true`` scores each unit at most 2.0 (8.7 EXPOSED before hardening)."""
    import re

    unit = tmp_path / f"{name}.service"
    unit.write_text((DEPLOY / "systemd" / f"{name}.service").read_text())
    proc = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    match = re.search(rf"Overall exposure level for {name}\.service: (\d+\.\d+)", proc.stdout + proc.stderr)
    assert match, proc.stdout + proc.stderr
    assert float(match.group(1)) <= 2.0, proc.stdout


@pytest.mark.parametrize("script", ["gatherer-init.sh", "deduplicator-init.sh"])
def test_init_scripts_are_clean(script):
    path = DEPLOY / "scripts" / script
    assert os.access(path, os.X_OK)
    subprocess.run(["bash", "-n", str(path)], check=True)
    code = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#"))
    assert "init-db" in code and "migrate" in code and "health" in code and "--wait" in code
    assert not re.search(r"PASSWORD|psql -c|curl |pg_isready", code)
    if shutil.which("shellcheck"):
        proc = subprocess.run(["shellcheck", "-x", str(path)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout


def _stub_systemctl(tmp_path: Path) -> tuple[Path, Path]:
    log = tmp_path / "systemctl.log"
    stub = tmp_path / "systemctl"
    stub.write_text(f'#!/bin/sh\necho "$*" >> {log}\n')
    stub.chmod(0o755)
    return stub, log


def test_init_scripts_run_end_to_end(pg_cluster_factory, health_service, tmp_path, kalshictl_exe):
    cluster = pg_cluster_factory()
    gatherer, dedup = health_service("healthy"), health_service("degraded")
    pw = {"IT_G": "it-g-1", "IT_R": "it-r-1", "IT_D": "it-d-1", "IT_E": "it-e-1"}
    roles = {"gatherer": "env:IT_G", "dedup_reader": "env:IT_R", "deduplicator": "env:IT_D", "exporter": "env:IT_E"}
    g_cfg = write_config(
        tmp_path / "gatherer.yaml",
        {
            "gatherer": {
                "database": {"dsn": cluster.dsn("kalshi_ts", "gatherer"), "password": "env:IT_G",
                             "admin_dsn": cluster.dsn("kalshi_ts", "postgres")},
                "http": {"host": "127.0.0.1", "port": int(gatherer.url.rsplit(":", 1)[1])},
            },
            "roles": roles,
        },
    )  # fmt: skip
    d_cfg = write_config(
        tmp_path / "dedup.yaml",
        {
            "deduplicator": {
                "production": {"dsn": cluster.dsn("kalshi_prod", "deduplicator"), "password": "env:IT_D",
                               "admin_dsn": cluster.dsn("kalshi_prod", "postgres"), "allow_insecure": True},
                "gatherers": [{"name": "gatherer-1", "health_url": gatherer.url + "/health",
                               "database": {"dsn": cluster.dsn("kalshi_ts", "dedup_reader"), "password": "env:IT_R",
                                            "allow_insecure": True}}],
            },
            "roles": roles,
        },
    )  # fmt: skip
    stub, log = _stub_systemctl(tmp_path)
    (tmp_path / "units").mkdir()
    env = {
        **os.environ,
        **pw,
        "KALSHICTL": kalshictl_exe,
        "KALSHI_DEPLOY_DIR": str(DEPLOY),
        "KALSHI_SYSTEMD_DIR": str(tmp_path / "units"),
        "SYSTEMCTL": str(stub),
        "KALSHI_SETUP_POSTGRES": "0",
        "KALSHI_RDS_WAIT": "20",
        "COLUMNS": "200",
    }

    def run(script: str, cfg: Path, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", str(DEPLOY / "scripts" / script)],
            env={**env, "KALSHI_CONFIG": str(cfg), **extra},
            capture_output=True,
            text=True,
            timeout=120,
        )

    g = run("gatherer-init.sh", g_cfg, KALSHI_HEALTH_WAIT="20")
    assert g.returncode == 0, g.stderr
    assert log.read_text().splitlines() == ["daemon-reload", "enable gatherer", "start gatherer"]
    assert (tmp_path / "units" / "gatherer.service").read_text() == (DEPLOY / "systemd/gatherer.service").read_text()
    log.unlink()

    d = run("deduplicator-init.sh", d_cfg, KALSHI_HEALTH_URL=dedup.url + "/health", KALSHI_HEALTH_WAIT="20")
    assert d.returncode == 0, d.stderr
    assert log.read_text().splitlines() == ["daemon-reload", "enable deduplicator", "start deduplicator"]
    assert gatherer.requests >= 2 and dedup.requests >= 1
    log.unlink()

    gatherer.status = "unhealthy"  # no healthy gatherer: "ERROR: No gatherers available" (docs/runbooks/startup.md)
    fail = run("deduplicator-init.sh", d_cfg, KALSHI_GATHERER_WAIT="1", KALSHI_MIGRATE="0")
    assert fail.returncode == 1
    assert "timed out after 1s waiting for any of 1 target(s)" in fail.stderr
    assert "no gatherer became healthy" in fail.stderr and not log.exists()
    for secret in pw.values():
        assert secret not in g.stderr + d.stderr + fail.stderr + g.stdout + d.stdout


def _norm(line: str) -> str:
    return " ".join(line.split())


@pytest.mark.parametrize(
    ("target", "dbname", "file"), [("gatherer", "kalshi_ts", "gatherer"), ("production", "kalshi_prod", "production")]
)
def test_pg_hba_files_carry_the_seed_lines(target, dbname, file):
    text = {_norm(x) for x in (DEPLOY / "pg_hba" / f"{file}.pg_hba.conf").read_text().splitlines()}
    for line in hba_lines(target, dbname):
        if not line.startswith("#"):
            assert _norm(line) in text


def _rules() -> dict[str, dict]:
    doc = yaml.safe_load((DEPLOY / "prometheus" / "kalshi-alerts.yml").read_text())
    return {r["alert"]: r for g in doc["groups"] for r in g["rules"]}


def _threshold(expr: str) -> tuple[str, float]:
    match = re.search(r"([<>]=?|==)\s*([0-9.]+)\s*$", expr)
    assert match, expr
    return match.group(1), float(match.group(2))


def test_prometheus_rules_use_the_seed_thresholds():
    rules = _rules()
    assert all(r["labels"]["severity"] in ("warning", "critical", "emergency") for r in rules.values())
    lag = {r["labels"]["severity"]: _threshold(r["expr"]) for r in rules.values() if "sync_lag" in r["expr"]}
    assert lag == {
        "warning": (">", th.LAG_HEALTHY_S),
        "critical": (">", th.LAG_UNHEALTHY_S),
        "emergency": (">", 300.0),
    }
    ws = {r["labels"]["severity"]: _threshold(r["expr"]) for r in rules.values() if "ws_connections" in r["expr"]}
    assert ws == {"warning": ("<", th.WS_SEED_HEALTHY), "critical": ("<", th.WS_SEED_UNHEALTHY_BELOW)}
    gping = {
        r["labels"]["severity"]: _threshold(r["expr"])[1] for r in rules.values() if "gatherer_db_ping" in r["expr"]
    }
    pping = {
        r["labels"]["severity"]: _threshold(r["expr"])[1] for r in rules.values() if "production_ping" in r["expr"]
    }
    assert gping == {"warning": th.GATHERER_DB_HEALTHY_MS / 1000, "critical": th.GATHERER_DB_DEGRADED_MS / 1000}
    assert pping == {"warning": th.PRODUCTION_DB_HEALTHY_MS / 1000, "critical": th.PRODUCTION_DB_DEGRADED_MS / 1000}
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert scrape["rule_files"] == ["kalshi-alerts.yml"]
    assert {j["job_name"] for j in scrape["scrape_configs"]} == {"kalshi-gatherer", "kalshi-deduplicator"}


def test_grafana_dashboard_is_valid_json_with_seed_thresholds():
    dash = json.loads((DEPLOY / "grafana" / "kalshi-pipeline.json").read_text())
    assert dash["uid"] and dash["panels"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    lag = next(p for p in dash["panels"] if "kalshi_dedup_sync_lag_seconds" in p["targets"][0]["expr"])
    steps = [s["value"] for s in lag["fieldConfig"]["defaults"]["thresholds"]["steps"]]
    assert steps == [None, 5, 30, 300]
