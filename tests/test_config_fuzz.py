"""Fuzz the config loader: any YAML-shaped input gives Settings or a ConfigError naming a key — never a crash."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kalshictl.config import Settings, parse_settings
from kalshictl.errors import ConfigError

KEYS = [
    "gatherer",
    "deduplicator",
    "exporter",
    "roles",
    "database",
    "dsn",
    "password",
    "websocket",
    "writer",
    "orderbook_connections",
    "flush_ms",
    "gatherers",
    "name",
    "production",
    "http",
    "port",
    "sync",
    "nope",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-10, 10**6),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.sampled_from(["env:X", "file:/nonexistent", "postgresql://u@h/db"]),
)
documents = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.sampled_from(KEYS), children, max_size=5)
    ),
    max_leaves=25,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_config_loader_never_crashes(doc):
    try:
        result = parse_settings(doc, environ={})
    except ConfigError as exc:
        message = str(exc)
        assert message and "Traceback" not in message
        return
    assert isinstance(result, Settings)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=12), st.text(max_size=12), max_size=4))
def test_env_overrides_never_crash(env):
    environ = {f"KALSHI_GATHERER__{k}": v for k, v in env.items()}
    doc = {"gatherer": {"database": {"dsn": "postgresql://g@127.0.0.1/kalshi_ts"}}}
    try:
        parse_settings(doc, environ=environ)
    except ConfigError:
        pass
