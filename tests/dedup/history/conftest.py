"""History import harness: a local exchange with a seeded past and a migrated production database."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from kalshictl.config import DedupSettings
from kalshictl.db.embedded import PostgresCluster
from kalshictl.sim import SimConfig, SimExchange
from kalshictl.sim.exchange import SimThread
from tests.dedup.conftest import DEDUP_PW, drop_db, make_db

ANCHOR = 1_795_737_600  # 2026-11-28 00:00 UTC
DAYS = 4


@dataclass
class HistoryEnv:
    sim: SimThread
    cluster: PostgresCluster
    db: str

    def prod(self) -> psycopg.Connection:
        return psycopg.connect(self.cluster.dsn(self.db), autocommit=True)

    def config(self, rps: float = 500.0, workers: int = 4) -> dict[str, Any]:
        return {
            "production": {
                "dsn": self.cluster.dsn(self.db, "deduplicator"),
                "password": "env:KT_DEDUP_PW",
                "connect_timeout_s": 5,
                "allow_insecure": True,
            },
            "gatherers": [{"name": "g1", "database": {"dsn": self.cluster.dsn(self.db), "allow_insecure": True}}],
            "exchange": {
                "rest_url": self.sim.ex.rest_url,
                "ws_url": self.sim.ex.ws_url,
                "allow_insecure": True,  # the local exchange
            },
            "sync": {"market_sync_enabled": False},
            "history": {"requests_per_second": rps, "workers": workers},
        }

    def settings(self, **kw: Any) -> DedupSettings:
        return DedupSettings.model_validate(self.config(**kw))

    def rows(self, sql: str) -> list[tuple]:
        with self.prod() as c:
            return c.execute(sql).fetchall()


@pytest.fixture(autouse=True)
def _password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KT_DEDUP_PW", DEDUP_PW)


@pytest.fixture
def history_env(pg_cluster: PostgresCluster) -> Iterator[HistoryEnv]:
    cfg = SimConfig(markets=40, seed=5, anchor_ts=ANCHOR, paused=True, history_days=DAYS, record_ground_truth=False)
    sim = SimExchange.start_in_thread(cfg)
    db = make_db(pg_cluster, "production")
    try:
        yield HistoryEnv(sim, pg_cluster, db)
    finally:
        sim.stop()
        drop_db(pg_cluster, db)
