"""A recorded period for replay tests: the local pipeline (exchange -> 3 gatherers -> deduplicator) run once per
module, so production holds a real recorded demo period; tests replay windows of it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from kalshictl.config import DatabaseSettings


@dataclass
class Recorded:
    """Production after a demo run: admin DSN (for the expected answers), the deduplicator's config and settings."""

    admin_dsn: str
    config: Path
    db: DatabaseSettings
    first_ts: int  # first and last recorded delta (µs)
    last_ts: int

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(self.admin_dsn, autocommit=True)

    def busiest(self, from_us: int, to_us: int, n: int) -> list[str]:
        with self.connect() as conn:
            rows = conn.execute(
                "SELECT ticker FROM orderbook_deltas WHERE exchange_ts > %s AND exchange_ts <= %s "
                "GROUP BY ticker ORDER BY count(*) DESC, ticker LIMIT %s",
                (from_us, to_us, n),
            ).fetchall()
        return [r[0] for r in rows]


@pytest.fixture(scope="module")
def recorded() -> Iterator[Recorded]:
    from kalshictl.local.demo import Demo, DemoOptions
    from kalshictl.research import research_db

    demo = Demo(DemoOptions(markets=30, seed=23, rate=150, snapshot_interval_s=5.0))
    try:
        demo.setup()
        demo.start()
        time.sleep(10)  # the period being recorded: the exchange trades for 10 s
        codes = demo.stop()
        assert all(code == 0 for code in codes.values()), codes
        pipe = demo.pipeline
        db = research_db(pipe.settings("deduplicator"))
        with psycopg.connect(pipe.production_dsn()) as conn:
            first, last = conn.execute("SELECT min(exchange_ts), max(exchange_ts) FROM orderbook_deltas").fetchone()
        assert first is not None and last - first > 5_000_000
        yield Recorded(pipe.production_dsn(), pipe.config_paths["deduplicator"], db, first, last)
    finally:
        demo.close()
