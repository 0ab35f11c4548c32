"""Cold tier: a production day is dropped only after a verified export, a late row is never lost, and research
reads (book show, book verify, coverage) give the same answer before and after the day moved to S3."""

from __future__ import annotations

from datetime import date

import boto3
import psycopg
import pytest
import yaml

from kalshictl.config import load_settings
from kalshictl.db.roles import OWNER_ROLE
from kalshictl.ops.cold_tier import drop_exported_days, export_closed_days
from kalshictl.research.book_query import book_at
from kalshictl.research.cold import ColdReader, cold_reader, open_cold_store
from kalshictl.research.coverage import coverage
from kalshictl.research.verify import verify
from tests.research.conftest import insert_deltas, insert_snapshot

DAY = 86_400_000_000
HOUR = 3_600_000_000
DAY1 = 1_795_132_800_000_000  # 2026-11-20T00:00:00Z
BUCKET = "cold"
TICKER = "KXCOLD-1"
DEDUP_PW = "dedup-cold-pw-1"


@pytest.fixture(params=["iceberg", "parquet"])
def cold(request, prod, s3_endpoint, tmp_path, pg_cluster, fresh_db):
    """Production with real hourly delta partitions for DAY1, seeded rows on three days, a bucket, and a config whose
    cold tier is Iceberg tables or plain Parquet."""
    from kalshictl.db.roles import OWNER_ROLE, ROLES, ensure_role

    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=BUCKET)
    with prod.connect() as conn:
        ensure_role(conn, next(r for r in ROLES if r.name == "deduplicator"), DEDUP_PW, fresh_db)
        conn.execute("GRANT EXECUTE ON FUNCTION kalshi_drop_exported_day(text, date, bigint) TO deduplicator")
        conn.execute(f"SET ROLE {OWNER_ROLE}")  # partitions are the owner's, as kalshi_ensure_partitions makes them
        for h in range(24):
            n = (DAY1 + h * HOUR) // HOUR
            conn.execute(
                f"CREATE TABLE orderbook_deltas_p{n} PARTITION OF orderbook_deltas"
                f" FOR VALUES FROM ({n * HOUR}) TO ({(n + 1) * HOUR})"
            )
        conn.execute("RESET ROLE")
        for d in range(3):
            base = DAY1 + d * DAY
            insert_snapshot(conn, TICKER, base + HOUR, {4000 + d: 500}, {5000: 300}, exchange_ts=base + HOUR)
            insert_snapshot(conn, TICKER, base + 5 * HOUR, {4000 + d: 500, 4100: 7}, {5000: 300}, source="rest")
            insert_deltas(conn, [(TICKER, base + HOUR + i * 60_000_000, i % 2 == 0, 4100, 7 if i == 0 else 0, i)
                                 for i in range(1)])  # fmt: skip
            insert_deltas(conn, [(TICKER, base + 2 * HOUR + i * 1000, True, 4200 + i, 100 + i, 0) for i in range(50)])
        conn.execute(
            "INSERT INTO sequence_gaps (gatherer, instance_id, window_id, channel, sid, tickers, reason, from_ts,"
            " to_ts, detected_at) VALUES ('g1', 'i1', 1, 'orderbook_delta', 2, ARRAY[%s], 'disconnect', %s, %s, %s)",
            (TICKER, DAY1 + 3 * HOUR, DAY1 + 4 * HOUR, DAY1 + 3 * HOUR),
        )
    doc = yaml.safe_load(prod.config.read_text())
    doc["exporter"]["s3"] = {"endpoint_url": s3_endpoint, "dest": f"s3://{BUCKET}/tier"}
    doc["exporter"]["format"] = request.param
    prod.config.write_text(yaml.safe_dump(doc))
    dedup_dsn = pg_cluster.dsn(fresh_db, "deduplicator")
    return prod, load_settings(prod.config), dedup_dsn


def _dedup(dsn: str) -> psycopg.Connection:
    return psycopg.connect(dsn, password=DEDUP_PW, autocommit=True)


def _delta_rows(conn, day_start: int) -> int:
    return conn.execute(
        "SELECT count(*) FROM orderbook_deltas WHERE exchange_ts >= %s AND exchange_ts < %s",
        (day_start, day_start + DAY),
    ).fetchone()[0]


def test_day_dropped_only_after_verified_export_and_late_rows_survive(cold):
    prod, settings, dsn = cold
    store = open_cold_store(settings.exporter)
    now = DAY1 + 2 * DAY + 12 * HOUR  # DAY3 noon: DAY1 and DAY2 are closed, DAY1 is older than keep_days=1
    at = DAY1 + 2 * HOUR + 60_000  # after the burst of deltas on DAY1 (the late row below changes nothing before it)
    with psycopg.connect(prod.admin_dsn) as admin:
        before = book_at(admin, TICKER, at)
        verify_before = verify(admin, TICKER, DAY1, DAY1 + 8 * HOUR, sources=("rest", "ws")).as_dict()
        coverage_before = coverage(admin, DAY1, DAY1 + DAY)
    with _dedup(dsn) as conn:
        # no export yet: nothing is dropped, the day is reported as kept
        run = drop_exported_days(conn, now, keep_days=1)
        assert [(o.table, o.day, o.action) for o in run.outcomes if o.table == "orderbook_deltas"] == [
            ("orderbook_deltas", "2026-11-20", "kept")
        ]
        with pytest.raises(psycopg.errors.RaiseException, match="no verified export"):
            conn.execute("SELECT kalshi_drop_exported_day('orderbook_deltas', '2026-11-20', 0)")
        assert _delta_rows(conn, DAY1) == 51

        run = export_closed_days(conn, store, now, settle_s=0)
        exported = {(o.table, o.day): o for o in run.outcomes}
        assert exported[("orderbook_deltas", "2026-11-20")].action == "verified"
        assert exported[("orderbook_deltas", "2026-11-20")].rows == 51
        assert ("orderbook_deltas", "2026-11-22") not in exported  # DAY3 is not closed
        ledger = conn.execute(
            "SELECT rows, cold_rows, checksum, verified_at, snapshot_id FROM cold_exports"
            " WHERE table_name = 'orderbook_deltas' AND day = '2026-11-20'"
        ).fetchone()
        assert ledger[0] == ledger[1] == 51 and len(ledger[2]) == 16 and ledger[3] == now
        if store.format == "parquet":  # the manifest holds the read-back count and checksum
            manifest = store.manifest("orderbook_deltas", date(2026, 11, 20))
            assert manifest["verified_rows"] == 51 and manifest["content_checksum"] == ledger[2]
        else:  # the Iceberg snapshot's summary holds them
            ns = settings.exporter.iceberg.namespace
            snap = store._open().catalog.load_table((ns, "orderbook_deltas")).snapshot_by_id(ledger[4])
            assert snap.summary["kalshictl.rows"] == "51" and snap.summary["kalshictl.checksum"] == ledger[2]

        # a gatherer catching up delivers a late row for the exported day: the drop refuses, nothing is lost
        insert_deltas(conn, [(TICKER, DAY1 + 9 * HOUR, False, 5000, -300, 0)], gatherer="g3")
        run = drop_exported_days(conn, now, keep_days=1)
        actions = {(o.table, o.day): o.action for o in run.outcomes}
        assert actions[("orderbook_deltas", "2026-11-20")] == "refused"
        assert actions[("orderbook_snapshots", "2026-11-20")] == "dropped"  # unchanged since its export
        assert _delta_rows(conn, DAY1) == 52

        # the next export run re-exports the day, then the drop goes through
        run = export_closed_days(conn, store, now + HOUR, settle_s=0)
        again = {(o.table, o.day): o for o in run.outcomes}
        assert again[("orderbook_deltas", "2026-11-20")].action == "verified"
        assert again[("orderbook_deltas", "2026-11-20")].rows == 52
        assert (
            conn.execute(
                "SELECT exports FROM cold_exports WHERE table_name = 'orderbook_deltas' AND day = '2026-11-20'"
            ).fetchone()[0]
            == 2
        )

    with _dedup(dsn) as conn:
        run = drop_exported_days(conn, now + HOUR, keep_days=1)
        done = {(o.table, o.day): o for o in run.outcomes}
        assert done[("orderbook_deltas", "2026-11-20")].action == "dropped"
        assert done[("orderbook_deltas", "2026-11-20")].partitions == 24
        assert ("orderbook_deltas", "2026-11-21") not in done  # within keep_days
        assert _delta_rows(conn, DAY1) == 0
        assert conn.execute("SELECT to_regclass(%s)", (f"orderbook_deltas_p{DAY1 // HOUR}",)).fetchone()[0] is None

    with psycopg.connect(prod.admin_dsn) as admin:
        reader = cold_reader(admin, settings)
        assert isinstance(reader, ColdReader)
        after = book_at(admin, TICKER, at, cold=reader)
        assert after.book == before.book and after.deltas_applied == before.deltas_applied
        assert after.base.snapshot_ts == before.base.snapshot_ts
        verify_after = verify(admin, TICKER, DAY1, DAY1 + 8 * HOUR, sources=("rest", "ws"), cold=reader).as_dict()
        assert verify_after == verify_before and verify_after["checked"] >= 1
        assert coverage(admin, DAY1, DAY1 + DAY) == coverage_before

    # a partition of the dropped day made again (e.g. a wider kalshi_ensure_partitions window) goes again while empty
    n = (DAY1 + 5 * HOUR) // HOUR
    with prod.connect() as admin:
        admin.execute(f"SET ROLE {OWNER_ROLE}")
        admin.execute(f"CREATE TABLE orderbook_deltas_p{n} PARTITION OF orderbook_deltas"
                      f" FOR VALUES FROM ({n * HOUR}) TO ({(n + 1) * HOUR})")  # fmt: skip
    with _dedup(dsn) as conn:
        run = drop_exported_days(conn, now + HOUR, keep_days=1)
        again = [
            (o.action, o.partitions) for o in run.outcomes if (o.table, o.day) == ("orderbook_deltas", "2026-11-20")
        ]
        assert again == [("dropped", 1)]
        assert conn.execute("SELECT to_regclass(%s)", (f"orderbook_deltas_p{n}",)).fetchone()[0] is None

    # a row arriving after the drop stays in production (the default partition) and joins the cold rows in reads
    with _dedup(dsn) as conn:
        insert_deltas(conn, [(TICKER, DAY1 + 2 * HOUR + 1000, True, 4300, 9, 0)], gatherer="g3")
        run = export_closed_days(conn, store, now + 2 * HOUR, settle_s=0)
        assert ("orderbook_deltas", "2026-11-20", "late_after_drop") in [
            (o.table, o.day, o.action) for o in run.outcomes
        ]
        assert _delta_rows(conn, DAY1) == 1
        kept = drop_exported_days(conn, now + 2 * HOUR, keep_days=1)  # nothing drops it: it is the only copy
        assert not [o for o in kept.outcomes if o.day == "2026-11-20" and o.action == "dropped"]
        assert _delta_rows(conn, DAY1) == 1
    with psycopg.connect(prod.admin_dsn) as admin:
        later = book_at(admin, TICKER, at, cold=cold_reader(admin, settings))
        assert later.book.yes.get(4300) == before.book.yes.get(4300, 0) + 9


def test_book_show_cli_reads_the_cold_tier(cold):
    """``kalshictl book show`` (as the read-only exporter) prints the same book before and after the move."""
    import orjson
    from typer.testing import CliRunner

    from kalshictl.cli.app import app

    prod, settings, dsn = cold
    now = DAY1 + 2 * DAY + 12 * HOUR
    at = str(DAY1 + 2 * HOUR + 60_000)
    args = ["book", "show", TICKER, "--at", at, "--config", str(prod.config), "--json", "--depth", "0"]
    before = CliRunner().invoke(app, args)
    assert before.exit_code == 0, before.output
    with _dedup(dsn) as conn:
        export_closed_days(conn, open_cold_store(settings.exporter), now, settle_s=0)
        drop_exported_days(conn, now, keep_days=1)
        assert _delta_rows(conn, DAY1) == 0
    after = CliRunner().invoke(app, args)
    assert after.exit_code == 0, after.output
    strip = lambda out: {k: v for k, v in orjson.loads(out).items() if k != "elapsed_ms"}  # noqa: E731
    assert strip(after.output) == strip(before.output)


def test_cold_export_and_retention_run_commands(cold, monkeypatch):
    """``cold export`` then ``retention run --config deduplicator.yaml`` (the production path of the retention
    command) on the one clock: DAY1 leaves production, DAY2 (within keep_days) stays."""
    import orjson
    from typer.testing import CliRunner

    from kalshictl import clock
    from kalshictl.cli.app import app

    prod, _settings, dsn = cold
    monkeypatch.setenv("KT_COLD_DEDUP_PW", DEDUP_PW)
    doc = yaml.safe_load(prod.config.read_text())
    doc["deduplicator"] = {
        "production": {"dsn": dsn, "password": "env:KT_COLD_DEDUP_PW", "allow_insecure": True},
        "gatherers": [{"name": "g1", "database": {"dsn": dsn, "allow_insecure": True}}],
    }
    doc["production"] = {"keep_days": 1, "export_settle_s": 0}
    cfg = prod.config.with_name("deduplicator.yaml")
    cfg.write_text(yaml.safe_dump(doc))
    runner = CliRunner()
    with clock.installed(clock.ManualClock(DAY1 + 2 * DAY + 12 * HOUR)):
        dry = runner.invoke(app, ["retention", "run", "--config", str(cfg), "--dry-run", "--json"])
        assert dry.exit_code == 0, dry.output
        assert {d["action"] for d in orjson.loads(dry.output)["days"]} == {"kept"}  # nothing exported yet
        out = runner.invoke(app, ["cold", "export", "--config", str(cfg), "--json"])
        assert out.exit_code == 0, out.output
        assert orjson.loads(out.output)["summary"] == {"verified": 4}  # deltas and snapshots x 2 closed days
        out = runner.invoke(app, ["retention", "run", "--config", str(cfg), "--json"])
        assert out.exit_code == 0, out.output
        dropped = {(d["table"], d["day"]) for d in orjson.loads(out.output)["days"] if d["action"] == "dropped"}
        assert ("orderbook_deltas", "2026-11-20") in dropped and ("orderbook_deltas", "2026-11-21") not in dropped
        status = runner.invoke(app, ["cold", "status", "--config", str(cfg), "--json"])
        assert status.exit_code == 0, status.output
        assert sum(r["dropped_at"] is not None for r in orjson.loads(status.output)) == len(dropped)
    with _dedup(dsn) as conn:
        assert _delta_rows(conn, DAY1) == 0 and _delta_rows(conn, DAY1 + DAY) == 51
