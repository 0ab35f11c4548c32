"""#15 item 3: production and gatherer links verify the server's certificate unless the config says allow_insecure."""

from __future__ import annotations

import pytest

from kalshictl.config import parse_settings
from kalshictl.db.connect import connect_kwargs
from kalshictl.errors import ConfigError

PROD = "postgresql://deduplicator@prod.example:5432/kalshi_prod"
LINK = "postgresql://dedup_reader@10.0.1.10:5432/kalshi_ts"


def dedup(production: dict, link: dict | None = None) -> dict:
    link = link if link is not None else {"sslrootcert": "/etc/kalshi/gatherer-ca.pem"}
    return {
        "deduplicator": {
            "production": {"dsn": PROD, **production},
            "gatherers": [{"name": "g1", "database": {"dsn": LINK, **link}}],
        }
    }


def test_defaults_to_verify_full_with_the_ca_from_config():
    s = parse_settings(dedup({"sslrootcert": "/etc/kalshi/rds.pem"}), environ={})
    prod, link = s.deduplicator.production, s.deduplicator.gatherers[0].database
    assert prod.sslmode == "verify-full" and link.sslmode == "verify-full"
    kwargs = connect_kwargs(prod)
    assert kwargs["sslmode"] == "verify-full" and kwargs["sslrootcert"] == "/etc/kalshi/rds.pem"
    ok = parse_settings(
        dedup({"sslrootcert": "system"}, {"sslmode": "verify-ca", "sslrootcert": "/ca.pem"}), environ={}
    )
    assert ok.deduplicator.gatherers[0].database.sslmode == "verify-ca"
    in_dsn = parse_settings(dedup({"dsn": PROD + "?sslmode=verify-full&sslrootcert=/ca.pem"}), environ={})
    assert in_dsn.deduplicator.production.sslmode is None  # the DSN's own verify-full is used as is


@pytest.mark.parametrize("mode", ["disable", "allow", "prefer", "require"])
def test_weak_modes_are_refused_without_allow_insecure(mode):
    with pytest.raises(ConfigError) as info:
        parse_settings(dedup({"sslmode": mode, "sslrootcert": "/ca.pem"}), environ={})
    assert "deduplicator.production" in str(info.value) and f"sslmode {mode} does not verify" in str(info.value)
    with pytest.raises(ConfigError, match=r"deduplicator.gatherers.0.database: sslmode"):
        parse_settings(dedup({"sslrootcert": "/ca.pem"}, {"sslmode": mode}), environ={})
    with pytest.raises(ConfigError, match="exporter.production: sslmode"):
        parse_settings({"exporter": {"production": {"dsn": f"{PROD}?sslmode={mode}"}}}, environ={})
    allowed = parse_settings(dedup({"sslmode": mode, "allow_insecure": True}), environ={})
    assert allowed.deduplicator.production.sslmode == mode


def test_verify_needs_a_ca_and_insecure_keeps_libpq_default():
    with pytest.raises(ConfigError, match="deduplicator.production: sslrootcert: required"):
        parse_settings(dedup({}), environ={})
    s = parse_settings(dedup({"allow_insecure": True}, {"allow_insecure": True}), environ={})
    assert s.deduplicator.production.sslmode is None and "sslmode" not in connect_kwargs(s.deduplicator.production)
    # the gatherer's own database (local socket) keeps libpq's behaviour
    g = parse_settings({"gatherer": {"database": {"dsn": "postgresql://gatherer@/kalshi_ts?host=/run"}}}, environ={})
    assert g.gatherer.database.sslmode is None


def test_preflight_fails_a_production_without_verified_tls(tmp_path):
    from kalshictl.ops.preflight import run
    from tests.helpers import write_config

    cfg = write_config(tmp_path / "d.yaml", dedup({"sslmode": "disable"}))
    out = run(cfg, check_health=False)
    assert not out["ok"]
    assert out["checks"][0]["check"] == "config valid" and "sslmode disable" in out["checks"][0]["detail"]


def test_deploy_examples_verify_tls_and_do_not_listen_everywhere():
    from pathlib import Path

    from kalshictl.config import load_settings

    deploy = Path(__file__).resolve().parents[1] / "deploy" / "config"
    d = load_settings(deploy / "deduplicator.yaml", environ={}).deduplicator
    g = load_settings(deploy / "gatherer.yaml", environ={}).gatherer
    links = [x.database for x in d.gatherers]
    assert d.production.sslmode == "verify-full" and d.production.sslrootcert
    assert all(x.sslmode in ("verify-ca", "verify-full") and x.sslrootcert and not x.allow_insecure for x in links)
    assert d.http.host not in ("0.0.0.0", "::") and g.http.host not in ("0.0.0.0", "::")
