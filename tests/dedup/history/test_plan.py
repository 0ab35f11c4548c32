"""Times in the history import's answers are read as everywhere else (kalshictl/units.py)."""

from __future__ import annotations

import time

import pytest

from kalshictl.dedup.history.plan import parse_time


@pytest.fixture
def new_york(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_a_time_without_a_zone_is_utc_not_the_hosts_local_time(new_york) -> None:
    assert parse_time("2026-01-01T00:00:00") == parse_time("2026-01-01T00:00:00Z") == 1_767_225_600


def test_what_is_not_a_time_is_none() -> None:
    assert parse_time("2026-01-01T00:00:00.5Z") == 1_767_225_600
    for bad in (None, "", "yesterday", 1_767_225_600, "2026-01-01T00:00:00Z" + " " * 10_000):
        assert parse_time(bad) is None, bad
