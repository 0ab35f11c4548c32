"""Table-driven tests of the health thresholds (docs/runbooks/reading-health.md)."""

import pytest

from kalshictl.health import thresholds as t


@pytest.mark.parametrize(
    ("connected", "ping", "expected"),
    [
        (True, 5.0, "healthy"),
        (True, 99.9, "healthy"),
        (True, 100.0, "degraded"),
        (True, 499.0, "degraded"),
        (True, 800.0, "degraded"),
        (False, None, "unhealthy"),
        (True, None, "unhealthy"),
    ],
)
def test_gatherer_db(connected, ping, expected):
    assert t.gatherer_db_status(connected, ping) == expected


@pytest.mark.parametrize(
    ("ping", "expected"), [(49.9, "healthy"), (50.0, "degraded"), (199.0, "degraded"), (None, "unhealthy")]
)
def test_production_db(ping, expected):
    assert t.production_db_status(ping is not None, ping) == expected


@pytest.mark.parametrize(
    ("healthy", "target", "expected"),
    [
        (150, 150, "healthy"),
        (140, 150, "healthy"),
        (139, 150, "degraded"),
        (100, 150, "degraded"),
        (99, 150, "unhealthy"),
        (0, 150, "unhealthy"),
        (15, 15, "healthy"),
        (14, 15, "healthy"),
        (13, 15, "degraded"),
        (10, 15, "degraded"),
        (9, 15, "unhealthy"),
        (3, 3, "healthy"),
        (2, 3, "degraded"),
        (1, 3, "unhealthy"),
    ],
)
def test_websocket(healthy, target, expected):
    assert t.websocket_status(healthy, target) == expected


@pytest.mark.parametrize(("n", "expected"), [(0, "unhealthy"), (1, "healthy"), (425_000, "healthy")])
def test_registry(n, expected):
    assert t.registry_status(n) == expected


@pytest.mark.parametrize(("n", "expected"), [(3, "healthy"), (2, "degraded"), (1, "degraded"), (0, "unhealthy")])
def test_gatherer_count(n, expected):
    assert t.gatherers_status(n, 3) == expected


@pytest.mark.parametrize(
    ("lag", "expected", "severity"),
    [
        (0.5, "healthy", "normal"),
        (4.99, "healthy", "normal"),
        (5.0, "degraded", "warning"),
        (30.0, "degraded", "critical"),
        (30.1, "unhealthy", "critical"),
        (301, "unhealthy", "emergency"),
    ],
)
def test_lag(lag, expected, severity):
    assert t.lag_status(lag) == expected
    assert t.lag_severity(lag) == severity


def test_gatherer_report_shape_and_codes():
    rep = t.gatherer_health(
        db_connected=True, db_ping_ms=3, ws_connections=150, ws_healthy=148, ws_target=150, markets=425_000
    )
    assert rep.status == "healthy" and rep.http_code == 200
    assert rep.as_dict()["components"] == {
        "timescaledb": "connected",
        "websocket": {"connections": 150, "healthy": 148},
        "market_registry": {"markets": 425_000},
    }
    rep = t.gatherer_health(
        db_connected=True, db_ping_ms=3, ws_connections=150, ws_healthy=120, ws_target=150, markets=10
    )
    assert (rep.status, rep.http_code) == ("degraded", 200)
    rep = t.gatherer_health(
        db_connected=False, db_ping_ms=None, ws_connections=150, ws_healthy=150, ws_target=150, markets=10
    )
    assert (rep.status, rep.http_code) == ("unhealthy", 503)
    rep = t.gatherer_health(
        db_connected=True, db_ping_ms=1, ws_connections=150, ws_healthy=150, ws_target=150, markets=10, buffer_full=True
    )
    assert rep.status == "degraded"


def test_dedup_report():
    rep = t.dedup_health(
        production_connected=True,
        production_ping_ms=2,
        gatherers={"gatherer-1": True, "gatherer-2": True, "gatherer-3": True},
        max_lag_s=0.5,
        tables_syncing=6,
    )
    assert rep.status == "healthy"
    assert rep.as_dict()["components"]["sync"] == {"max_lag_seconds": 0.5, "tables_syncing": 6}
    rep = t.dedup_health(
        production_connected=True,
        production_ping_ms=2,
        gatherers={"gatherer-1": True, "gatherer-2": False, "gatherer-3": False},
        max_lag_s=0.5,
        tables_syncing=6,
    )
    assert rep.status == "degraded"
    rep = t.dedup_health(
        production_connected=True, production_ping_ms=2, gatherers={"gatherer-1": True}, max_lag_s=31, tables_syncing=6
    )
    assert (rep.status, rep.http_code) == ("unhealthy", 503)


@pytest.mark.parametrize(
    ("free_percent", "warning", "critical", "expected"),
    [
        (None, 20.0, 10.0, "healthy"),  # unknown: reported, not guessed
        (100.0, 20.0, 10.0, "healthy"),
        (20.0, 20.0, 10.0, "healthy"),
        (19.99, 20.0, 10.0, "degraded"),
        (10.0, 20.0, 10.0, "degraded"),
        (9.99, 20.0, 10.0, "unhealthy"),
        (0.0, 20.0, 10.0, "unhealthy"),
        (29.0, 30.0, 5.0, "degraded"),
        (5.0, 30.0, 5.0, "degraded"),
        (4.0, 30.0, 5.0, "unhealthy"),
    ],
)
def test_disk(free_percent, warning, critical, expected):
    assert t.disk_status(free_percent, warning, critical) == expected


def test_disk_defaults():
    assert (t.disk_status(15.0), t.disk_status(5.0), t.disk_status(25.0)) == ("degraded", "unhealthy", "healthy")


@pytest.mark.parametrize(
    ("oldest_held_age_s", "keep_days", "expected"),
    [
        (None, 7, "healthy"),
        (0.0, 7, "healthy"),
        (13.99 * 86400, 7, "healthy"),
        (14 * 86400, 7, "degraded"),
        (30 * 86400, 7, "degraded"),
        (0.0, 0, "degraded"),  # keep_days 0: any partition held back is overdue
        (1.9 * 86400, 1, "healthy"),
        (2 * 86400, 1, "degraded"),
    ],
)
def test_retention(oldest_held_age_s, keep_days, expected):
    assert t.retention_status(oldest_held_age_s, keep_days) == expected
