"""The chaos verifier pairs lifecycle rows with the exchange's events right: Kalshi repeats identical time-less
messages, and a row belongs to the latest repeat before it, not to an earlier one every gatherer missed."""

from __future__ import annotations

import orjson
import psycopg

from kalshictl.db.embedded import PostgresCluster
from kalshictl.kalshi.lifecycle_key import digest
from kalshictl.local.verify import compare
from tests.dedup.conftest import make_db

T0 = 1_800_000_000_000_000
PAYLOAD = {"market_ticker": "KX-A", "event_type": "deactivated", "is_deactivated": True}
DETERMINED = {"market_ticker": "KX-B", "event_type": "determined", "result": "yes", "determination_ts": 1_800_000_100}
GATHERERS = ("g1", "g2", "g3")


def _truth(path, events: list[tuple[str, str, dict, int]]) -> None:
    with open(path, "wb") as fh:
        for ticker, event_type, payload, ts in events:
            rec = {"kind": "lifecycle", "ticker": ticker, "event_type": event_type, "exchange_ts": ts}
            fh.write(orjson.dumps(rec | {"channel": "market_lifecycle_v2", "payload": payload}) + b"\n")


def _row(conn: psycopg.Connection, ticker: str, event_type: str, payload: dict, ts: int, rx: int) -> None:
    conn.execute(
        "INSERT INTO lifecycle_events (exchange_ts, received_at, ticker, event_type, payload, gatherer, digest)"
        " VALUES (%s, %s, %s, %s, %s, 'g1', %s)",
        (ts, rx, ticker, event_type, orjson.dumps(payload).decode(), digest(event_type, ticker, payload)),
    )


def test_rows_pair_with_the_latest_repeat_before_them(pg_cluster: PostgresCluster, tmp_path) -> None:
    db = make_db(pg_cluster, "production")
    truth = tmp_path / "truth.jsonl"
    # three identical repeats; every gatherer was blind around the second one (a recorded loss)
    _truth(
        truth,
        [
            ("KX-A", "deactivated", PAYLOAD, T0),
            ("KX-A", "deactivated", PAYLOAD, T0 + 4_200_000),
            ("KX-A", "deactivated", PAYLOAD, T0 + 10_000_000),
            ("KX-B", "determined", DETERMINED, 1_800_000_100_600_000),
        ],
    )
    with psycopg.connect(pg_cluster.dsn(db), autocommit=True) as c:
        _row(c, "KX-A", "deactivated", PAYLOAD, T0 + 1_000, T0 + 1_000)  # receive-time stamps
        _row(c, "KX-A", "deactivated", PAYLOAD, T0 + 10_001_000, T0 + 10_001_000)
        # a message with its own (whole-second) time, stored at that time: before the event's emission
        _row(c, "KX-B", "determined", DETERMINED, 1_800_000_100_000_000, 1_800_000_100_601_000)
        for i, g in enumerate(GATHERERS):
            c.execute(
                "INSERT INTO sequence_gaps (gatherer, instance_id, window_id, channel, reason, from_ts, to_ts,"
                " detected_at) VALUES (%s, 'i', %s, 'market_lifecycle_v2', 'disconnect', %s, %s, %s)",
                (g, i, T0 + 3_000_000, T0 + 6_000_000, T0 + 6_000_000),
            )
    reports = {r.table: r for r in compare(pg_cluster.dsn(db), truth, GATHERERS)}
    life = reports["lifecycle_events"]
    assert (life.emitted, life.stored) == (4, 3)
    assert life.lost_recorded == 1, life.as_dict()  # the repeat at T0 + 4.2 s, inside every gatherer's window
    assert (life.lost_unrecorded, life.duplicated, life.extra) == (0, 0, 0), life.as_dict()
