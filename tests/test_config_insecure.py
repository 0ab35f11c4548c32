"""The config refuses a public /health bind and plain-text exchange URLs unless the section says allow_insecure."""

from __future__ import annotations

import pytest

from kalshictl.config import parse_settings
from kalshictl.errors import ConfigError

DB = {"dsn": "postgresql://gatherer@/kalshi_ts?host=/var/run/postgresql"}


def gatherer(**section) -> dict:
    return {"gatherer": {"database": DB, **section}}


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"http": {"host": "0.0.0.0"}}, "gatherer.http.host"),
        ({"http": {"host": "::"}}, "gatherer.http.host"),
        ({"http": {"host": ""}}, "gatherer.http.host"),
        ({"http": {"host": "8.8.8.8"}}, "gatherer.http.host"),
        ({"exchange": {"rest_url": "http://external-api.kalshi.com/trade-api/v2"}}, "gatherer.exchange.rest_url"),
        ({"exchange": {"ws_url": "ws://external-api-ws.kalshi.com/trade-api/ws/v2"}}, "gatherer.exchange.ws_url"),
        ({"exchange": {"rest_url": "ftp://x/"}}, "gatherer.exchange.rest_url"),
    ],
)
def test_public_binds_and_plain_text_urls_are_refused_naming_the_key(section, key):
    with pytest.raises(ConfigError) as err:
        parse_settings(gatherer(**section), environ={})
    assert f"{key}:" in str(err.value), str(err.value)
    if "ftp" in str(section):
        return  # not a URL scheme allow_insecure permits
    assert "allow_insecure" in str(err.value), str(err.value)
    section = {name: {**value, "allow_insecure": True} for name, value in section.items()}
    parse_settings(gatherer(**section), environ={})  # explicitly allowed (local demos and tests)


def test_deduplicator_sections_and_env_overrides_are_checked_too():
    doc = {
        "deduplicator": {
            "production": {"dsn": "postgresql://d@h/p", "sslrootcert": "system"},
            "gatherers": [{"name": "g1", "database": {"dsn": "postgresql://r@h/g", "sslrootcert": "system"}}],
            "exchange": {"rest_url": "http://external-api.kalshi.com/trade-api/v2"},
        }
    }
    with pytest.raises(ConfigError, match=r"deduplicator\.exchange\.rest_url:"):
        parse_settings(doc, environ={})
    with pytest.raises(ConfigError, match=r"gatherer\.http\.host:"):
        parse_settings(gatherer(), environ={"KALSHI_GATHERER__HTTP__HOST": "0.0.0.0"})


def test_private_and_loopback_binds_and_tls_urls_are_fine():
    for host in ("127.0.0.1", "10.0.1.10", "::1", "localhost", "gatherer-1.internal"):
        s = parse_settings(gatherer(http={"host": host}), environ={})
        assert s.gatherer.http.host == host
    s = parse_settings(gatherer(), environ={})
    assert s.gatherer.exchange.rest_url.startswith("https://") and s.gatherer.exchange.ws_url.startswith("wss://")
