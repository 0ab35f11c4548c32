"""Disk and retention alerting in deploy/: the rules use /health's thresholds and pass promtool (its syntax check and
the unit tests in deploy/prometheus/tests/), and the dashboard has the disk panel with the same bands."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from kalshictl.config import DiskSettings
from kalshictl.health import thresholds as th

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PROMTOOL = shutil.which("promtool")


def _storage_rules() -> dict[str, dict]:
    doc = yaml.safe_load((DEPLOY / "prometheus" / "kalshi-alerts.yml").read_text())
    group = next(g for g in doc["groups"] if g["name"] == "kalshi-storage")
    return {r["alert"]: r for r in group["rules"]}


def test_disk_alerts_use_the_health_thresholds_and_config_defaults():
    rules = _storage_rules()
    bands = {}
    for rule in rules.values():
        match = re.fullmatch(r"100 \* kalshi_db_disk_free_bytes / kalshi_db_disk_size_bytes < ([0-9.]+)", rule["expr"])
        if match:
            bands[rule["labels"]["severity"]] = float(match.group(1))
    defaults = DiskSettings()
    assert bands == {"warning": th.DISK_WARNING_FREE_PERCENT, "critical": th.DISK_CRITICAL_FREE_PERCENT}
    assert (defaults.warning_free_percent, defaults.critical_free_percent) == (bands["warning"], bands["critical"])
    assert {"KalshiDiskFullWithin24h", "KalshiRetentionHeldBack", "KalshiRetentionFailing"} <= set(rules)
    assert all("docs/runbooks/disk-filling.md" in r["annotations"]["description"] for r in rules.values())
    assert (Path(__file__).resolve().parents[2] / "docs" / "runbooks" / "disk-filling.md").is_file()


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian: apt-get install -y prometheus)")
def test_promtool_checks_the_rules_and_runs_their_unit_tests():
    check = subprocess.run(
        [PROMTOOL, "check", "rules", str(DEPLOY / "prometheus" / "kalshi-alerts.yml")], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    tests = subprocess.run(
        [PROMTOOL, "test", "rules", str(DEPLOY / "prometheus" / "tests" / "kalshi-storage.test.yml")],
        capture_output=True,
        text=True,
    )
    assert tests.returncode == 0 and "SUCCESS" in tests.stdout, tests.stdout + tests.stderr


def test_grafana_has_the_disk_panel_with_the_health_bands():
    dash = json.loads((DEPLOY / "grafana" / "kalshi-pipeline.json").read_text())
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    disk = next(p for p in dash["panels"] if "kalshi_db_disk_free_bytes" in p["targets"][0]["expr"])
    steps = [s["value"] for s in disk["fieldConfig"]["defaults"]["thresholds"]["steps"]]
    assert steps == [None, th.DISK_CRITICAL_FREE_PERCENT, th.DISK_WARNING_FREE_PERCENT]
    assert any("kalshi_retention_partitions_held" in t["expr"] for p in dash["panels"] for t in p["targets"])
