"""Fixtures for research tests: a migrated production database read as the real read-only ``exporter`` role."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import psycopg
import pytest

from tests.helpers import write_config

EXPORTER_PW_ENV = "KT_RESEARCH_EXPORTER_PW"
EXPORTER_PW = "exp-research-pw-1"


@dataclass
class Prod:
    """A migrated production database: admin DSN for seeding, a config that reads it as ``exporter``."""

    admin_dsn: str
    config: Path

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(self.admin_dsn, autocommit=True)


@pytest.fixture
def prod(pg_cluster, fresh_db, tmp_path, monkeypatch) -> Iterator[Prod]:
    from kalshictl.db import migrate as mig
    from kalshictl.db.roles import ROLES, ensure_role

    admin = pg_cluster.dsn(fresh_db, "postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        mig.migrate(conn, "production")
        ensure_role(conn, next(r for r in ROLES if r.name == "exporter"), EXPORTER_PW, fresh_db)
    monkeypatch.setenv(EXPORTER_PW_ENV, EXPORTER_PW)
    os.environ[EXPORTER_PW_ENV] = EXPORTER_PW
    cfg = write_config(
        tmp_path / "exporter.yaml",
        {
            "exporter": {
                "production": {
                    "dsn": pg_cluster.dsn(fresh_db, "exporter"),
                    "password": f"env:{EXPORTER_PW_ENV}",
                    "allow_insecure": True,
                }
            }
        },
    )
    yield Prod(admin, cfg)


@pytest.fixture
def s3_endpoint(monkeypatch) -> Iterator[str]:
    """moto's S3 *server* on a free loopback port (real HTTP), with dummy credentials in the environment."""
    from moto.server import ThreadedMotoServer

    from kalshictl.db.embedded import free_port

    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    import urllib.request

    # moto's backends are process-global: start every test from an empty store
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=10).read()
    try:
        yield endpoint
    finally:
        server.stop()


def levels_json(levels: dict[int, int]) -> str:
    return orjson.dumps(sorted([p, s] for p, s in levels.items())).decode()


def insert_snapshot(
    conn: psycopg.Connection,
    ticker: str,
    ts: int,
    yes: dict[int, int],
    no: dict[int, int],
    *,
    source: str = "ws",
    gatherer: str = "g1",
    exchange_ts: int | None = None,
) -> None:
    """A production snapshot row (asks derived as the migrations README says)."""
    yes_asks = {10_000 - p: s for p, s in no.items()}
    no_asks = {10_000 - p: s for p, s in yes.items()}
    best_bid = max(yes) if yes else None
    best_ask = min(yes_asks) if yes_asks else None
    conn.execute(
        "INSERT INTO orderbook_snapshots (snapshot_ts, exchange_ts, ticker, source, yes_bids, yes_asks, no_bids, "
        "no_asks, best_yes_bid, best_yes_ask, spread, gatherer) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
        (
            ts,
            exchange_ts,
            ticker,
            source,
            levels_json(yes),
            levels_json(yes_asks),
            levels_json(no),
            levels_json(no_asks),
            best_bid,
            best_ask,
            best_ask - best_bid if best_bid is not None and best_ask is not None else None,
            gatherer,
        ),
    )


def insert_deltas(conn: psycopg.Connection, rows: list[tuple], gatherer: str = "g1") -> None:
    """Rows of (ticker, exchange_ts, side_bool, price, size_delta, occurrence)."""
    with (
        conn.cursor() as cur,
        cur.copy(
            "COPY orderbook_deltas (ticker, exchange_ts, received_at, side, price, size_delta, occurrence, gatherer) "
            "FROM STDIN"
        ) as copy,
    ):
        for ticker, ts, side, price, size_delta, occ in rows:
            copy.write_row((ticker, ts, ts + 500, side, price, size_delta, occ, gatherer))
