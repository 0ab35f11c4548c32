"""Deduplicator test harness: real gatherer databases (written exactly as a gatherer writes) and a production one."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg
import pytest

from kalshictl.config import DedupSettings
from kalshictl.db.embedded import PostgresCluster
from kalshictl.db.migrate import migrate
from kalshictl.db.roles import ROLES, ensure_role
from kalshictl.kalshi.lifecycle_key import digest

READER_PW = "reader-pw-1"
DEDUP_PW = "dedup-pw-1"
_names = itertools.count()


def now_us() -> int:
    return time.time_ns() // 1000


_templates: dict[tuple[int, str], str] = {}


def _template(cluster: PostgresCluster, target: str) -> str:
    """A migrated, granted template database per cluster and target (built once)."""
    key = (cluster.port, target)
    if key not in _templates:
        name = f"tmpl_{os.getpid()}_{target}"
        drop_db(cluster, name)
        cluster.create_database(name)
        with psycopg.connect(cluster.dsn(name), autocommit=True) as conn:
            migrate(conn, target)  # type: ignore[arg-type]
            for spec in ROLES:
                if spec.target == target and spec.name in ("dedup_reader", "deduplicator"):
                    ensure_role(conn, spec, READER_PW if spec.name == "dedup_reader" else DEDUP_PW, name)
        _templates[key] = name
    return _templates[key]


def make_db(cluster: PostgresCluster, target: str, name: str | None = None) -> str:
    """Create a migrated, granted database (a copy of the target's template); returns its name.

    A gatherer copy gets a fresh ``gatherer_meta.instance_id`` (a new database instance).
    """
    name = name or f"d_{os.getpid()}_{next(_names)}_{target[0]}"
    tmpl = _template(cluster, target)
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{tmpl}"')
    if target == "gatherer":
        with psycopg.connect(cluster.dsn(name), autocommit=True) as conn:
            conn.execute("UPDATE gatherer_meta SET instance_id = gen_random_uuid()")
    return name


def drop_db(cluster: PostgresCluster, name: str) -> None:
    if not cluster.is_running():
        return
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class GDB:
    """One gatherer database."""

    name: str
    cluster: PostgresCluster
    db: str

    def conn(self, autocommit: bool = True) -> psycopg.Connection:
        return psycopg.connect(self.cluster.dsn(self.db), autocommit=autocommit)

    def source(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "database": {
                "dsn": self.cluster.dsn(self.db, "dedup_reader"),
                "password": "env:KT_DEDUP_READER_PW",
                "connect_timeout_s": 2,
                "allow_insecure": True,  # test clusters have no TLS
            },
        }


@dataclass
class DedupEnv:
    """Three gatherer databases + production, and a DedupSettings pointing at them."""

    prod_cluster: PostgresCluster
    prod_db: str
    gatherers: list[GDB]
    extra: dict[str, Any] = field(default_factory=dict)

    def prod(self) -> psycopg.Connection:
        return psycopg.connect(self.prod_cluster.dsn(self.prod_db), autocommit=True)

    def config(self, **sync: Any) -> dict[str, Any]:
        return {
            "production": {
                "dsn": self.prod_cluster.dsn(self.prod_db, "deduplicator"),
                "password": "env:KT_DEDUP_PW",
                "connect_timeout_s": 2,
                "allow_insecure": True,
            },
            "gatherers": [g.source() for g in self.gatherers],
            "sync": {
                "interval_ms": 50,
                "min_batch_rows": 100,
                "max_batch_rows": 5000,
                "market_sync_enabled": False,
                "wait_for_gatherer_s": 20,
                "reconnect_min_s": 0.1,
                "reconnect_max_s": 1.0,
                **sync,
            },
            "http": {"host": "127.0.0.1", "port": 0},
            **self.extra,
        }

    def settings(self, **sync: Any) -> DedupSettings:
        return DedupSettings.model_validate(self.config(**sync))

    def count(self, table: str) -> int:
        with self.prod() as c:
            return c.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


@pytest.fixture(autouse=True)
def _passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KT_DEDUP_READER_PW", READER_PW)
    monkeypatch.setenv("KT_DEDUP_PW", DEDUP_PW)


@pytest.fixture
def dedup_env(pg_cluster: PostgresCluster) -> Iterator[DedupEnv]:
    """Production + three gatherer databases, all in the shared cluster."""
    prod = make_db(pg_cluster, "production")
    gs = [GDB(f"gatherer-{i}", pg_cluster, make_db(pg_cluster, "gatherer")) for i in (1, 2, 3)]
    env = DedupEnv(pg_cluster, prod, gs)
    yield env
    for g in env.gatherers:
        drop_db(g.cluster, g.db)
    drop_db(pg_cluster, prod)


# -- writing rows exactly as a gatherer does (txid defaults to the writing transaction) -------------------------


def trade_row(i: int, base_us: int) -> tuple:
    return (str(uuid.UUID(int=i + 1)), base_us + i * 1000, f"MKT-{i % 7}", 1000 + i % 90 * 100, 100 + i, i % 2 == 0)


def write_trades(conn: psycopg.Connection, rows: list[tuple], received_at: int | None = None) -> None:
    """Insert trades in one transaction of ``conn`` (caller commits if not autocommit)."""
    rec = received_at or now_us()
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO trades (trade_id, exchange_ts, received_at, ticker, price, size, taker_side)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)",
            [(r[0], r[1], rec, r[2], r[3], r[4], r[5]) for r in rows],
        )


def delta_row(ticker: str, ts: int, side: bool, price: int, size_delta: int, occ: int) -> tuple:
    return (ticker, ts, side, price, size_delta, occ)


def write_deltas(conn: psycopg.Connection, rows: list[tuple], received_at: int | None = None) -> None:
    rec = received_at or now_us()
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO orderbook_deltas (ticker, exchange_ts, received_at, side, price, size_delta, occurrence)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)",
            [(r[0], r[1], rec, r[2], r[3], r[4], r[5]) for r in rows],
        )


def write_gap(conn: psycopg.Connection, gatherer: str, ticker: str | None, from_ts: int, to_ts: int | None) -> None:
    """One order-book gap window over ``ticker`` (None = every market)."""
    conn.execute(
        "INSERT INTO sequence_gaps (gatherer, instance_id, window_id, channel, tickers, reason, from_ts, to_ts,"
        " detected_at) VALUES (%s, 'test', (SELECT coalesce(max(window_id), 0) + 1 FROM sequence_gaps),"
        " 'orderbook_delta', %s, %s, %s, %s, %s)",
        (gatherer, None if ticker is None else [ticker], "seq_gap", from_ts, to_ts, now_us()),
    )


def write_misc(conn: psycopg.Connection, i: int, base_us: int) -> None:
    """One ticker, one lifecycle event and one snapshot (row i of the truth)."""
    rec = now_us()
    conn.execute(
        "INSERT INTO tickers (exchange_ts, received_at, ticker, yes_bid, yes_ask) VALUES (%s, %s, %s, %s, %s)",
        (base_us + i, rec, f"MKT-{i % 5}", 4000, 4100),
    )
    payload = {"a": "x\ny"}
    conn.execute(
        "INSERT INTO lifecycle_events (exchange_ts, received_at, ticker, event_type, payload, digest)"
        " VALUES (%s, %s, %s, 'activated', %s, %s)",
        (base_us + i, rec, f"MKT-{i}", orjson.dumps(payload).decode(), digest("activated", f"MKT-{i}", payload)),
    )
    conn.execute(
        "INSERT INTO orderbook_snapshots (snapshot_ts, ticker, source, yes_bids, yes_asks, no_bids, no_asks)"
        " VALUES (%s, %s, 'ws', '[[4000, 100]]', '[]', '[]', '[]')",
        (base_us + i, f"MKT-{i % 3}"),
    )


async def wait_until(pred: Callable[[], Any | Awaitable[Any]], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll ``pred`` (sync or async) every 50 ms until truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = pred()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last={last!r})")
