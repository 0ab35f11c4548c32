"""`kalshictl replay`'s refusals: bad speeds and windows name the option and exit 2 before anything is opened."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kalshictl.cli.replay import parse_speed
from kalshictl.errors import ConfigError


def test_speed_parses_max_and_positive_multiples():
    assert parse_speed("max") is None and parse_speed("MAX") is None
    assert parse_speed("1") == 1.0 and parse_speed("0.5") == 0.5 and parse_speed("60") == 60.0
    for bad in ("0", "-1", "fast", "inf", "nan", ""):
        with pytest.raises(ConfigError, match="--speed"):
            parse_speed(bad)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "2026-01-02", "--to", "2026-01-01"], "--from"),
        (["--from", "yesterday", "--to", "now"], "--from"),
        (["--from", "2026-01-01", "--to", "2026-01-02", "--speed", "fast"], "--speed"),
    ],
)
def test_bad_options_exit_2_naming_the_option(tmp_path, args, message):
    proc = subprocess.run(
        [sys.executable, "-m", "kalshictl", "replay", "--config", str(tmp_path / "none.yaml"), *args],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
