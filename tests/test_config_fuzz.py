"""Fuzz the config loader: any YAML-shaped input gives Settings or a ConfigError naming a key — never a crash."""

import copy

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


# Realistic configs: a valid gatherer + deduplicator document with one field mutated, so validation itself is
# exercised. The answer is Settings, or a ConfigError naming the mutated field's dotted path — never another error.
BASE = {
    "gatherer": {
        "name": "g1",
        "database": {"dsn": "postgresql://g@127.0.0.1/kalshi_ts"},
        "exchange": {
            "rest_url": "https://127.0.0.1:1/trade-api/v2",
            "ws_url": "wss://127.0.0.1:1/trade-api/ws/v2",
            "requests_per_second": 20.0,
        },
        "websocket": {"global_connections": 3, "orderbook_connections": 3, "ping_timeout_s": 5.0},
        "writer": {"batch_rows": 2000, "flush_ms": 50, "max_buffer_rows": 100000, "max_buffer_bytes": 2**28},
        "http": {"host": "127.0.0.1", "port": 0},
    },
    "deduplicator": {
        "production": {"dsn": "postgresql://d@127.0.0.1/prod", "sslrootcert": "system"},
        "gatherers": [
            {"name": "g1", "database": {"dsn": "postgresql://r@127.0.0.1/kalshi_ts", "sslrootcert": "system"}}
        ],
        "sync": {"interval_ms": 50, "min_batch_rows": 1000},
        "http": {"port": 0},
    },
}
BAD = [None, True, -1, 0, 2**70, 1.5, float("nan"), "", "x", "-5", [], [1], {}, {"a": 1}, "env:KALSHI_FUZZ_UNSET"]


def _leaves(node, path=()):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _leaves(v, (*path, i))
    else:
        yield path


LEAVES = list(_leaves(BASE))


def test_base_config_is_valid():
    assert isinstance(parse_settings(copy.deepcopy(BASE), environ={}), Settings)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(LEAVES), st.one_of(st.sampled_from(BAD), scalars), st.sampled_from(["replace", "delete", "add"]))
def test_one_mutated_field_is_accepted_or_named(path, value, action):
    doc = copy.deepcopy(BASE)
    parent = doc
    for k in path[:-1]:
        parent = parent[k]
    if action == "replace":
        parent[path[-1]] = value
        named = path
    elif action == "delete" and isinstance(parent, dict):
        del parent[path[-1]]
        named = path
    else:
        if not isinstance(parent, dict):
            return
        parent["zz_unknown_key"] = value
        named = (*path[:-1], "zz_unknown_key")
    try:
        result = parse_settings(doc, environ={})
    except ConfigError as exc:
        message = str(exc)
        dotted = ".".join(str(p) for p in named)
        assert dotted in message or ".".join(str(p) for p in named[:-1]) in message, (dotted, message)
        assert "Traceback" not in message
        return
    assert isinstance(result, Settings)
