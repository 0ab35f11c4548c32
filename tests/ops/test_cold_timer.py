"""deploy/systemd/kalshictl-cold.{service,timer}: the cold tier's schedule runs real commands; systemd accepts it."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kalshictl.cli.app import app
from tests.ops.test_deploy import DEPLOY, kalshictl_exe  # noqa: F401 - the fixture

SYSTEMD = DEPLOY / "systemd"


def _values(name: str, key: str) -> list[str]:
    lines = (SYSTEMD / name).read_text().splitlines()
    return [line.split("=", 1)[1] for line in lines if line.startswith(f"{key}=")]


def test_service_exports_then_drops_with_the_deduplicator_config():
    starts = _values("kalshictl-cold.service", "ExecStart")
    argvs = [shlex.split(s.lstrip("-")) for s in starts]
    assert [a[1:3] for a in argvs] == [["cold", "export"], ["cold", "retention"]]
    assert all(a[0] == "/opt/kalshi/venv/bin/kalshictl" and "/etc/kalshi/deduplicator.yaml" in a for a in argvs)
    assert starts[0].startswith("-") and not starts[1].startswith("-")  # an unverified day still lets retention run
    for argv in argvs:  # every option the unit passes exists
        out = CliRunner().invoke(app, [*argv[1:3], "--help"])
        assert out.exit_code == 0 and all(opt in out.output for opt in argv[3:] if opt.startswith("--"))
    assert _values("kalshictl-cold.service", "Type") == ["oneshot"]
    assert _values("kalshictl-cold.timer", "OnCalendar") == ["hourly"]
    assert _values("kalshictl-cold.timer", "Persistent") == ["true"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify_cold_units(tmp_path: Path, kalshictl_exe: str):  # noqa: F811
    for name in ("kalshictl-cold.service", "kalshictl-cold.timer"):
        text = (SYSTEMD / name).read_text().replace("/opt/kalshi/venv/bin/kalshictl", kalshictl_exe)
        (tmp_path / name).write_text(text)
    proc = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "kalshictl-cold.timer"),
                           str(tmp_path / "kalshictl-cold.service")], capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert not [line for line in proc.stderr.splitlines() if "kalshictl-cold" in line], proc.stderr
