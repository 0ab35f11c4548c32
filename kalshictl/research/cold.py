"""The cold tier: one table-day at a time written to S3, read back to verify it, and read again by research tools.

:class:`ColdStore` is the one interface the rest of kalshictl uses (docs/deduplicator.md, "Cold tier and production
retention"): ``export_day`` writes a day from production, ``verify_day`` reads what S3 now holds and returns its row
count and content checksum, ``read_day`` returns a day's rows (optionally one market's) as a pyarrow table, and
``total_bytes`` sizes the tier. :class:`ParquetColdStore` keeps the layout of ``kalshictl export``
(kalshictl/research/export.py): each day's part files and its ``_manifest.json``; verification re-reads every part,
checks its SHA-256 against the manifest and writes the read-back count and checksum into the manifest.

The **content checksum** of a day is order-independent: the sum mod 2^64 of the first 8 bytes of BLAKE2b over each
row's canonical JSON (typed values as pyarrow returns them), as 16 hex digits. Two reads of the same rows give the same
checksum whatever their file layout.
"""

from __future__ import annotations

import hashlib
import io
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from kalshictl.db.rows import one_row
from kalshictl.errors import ExitCode, KalshiCtlError, import_extra
from kalshictl.research import export as ex

if TYPE_CHECKING:
    import psycopg
    import pyarrow as pa

    from kalshictl.config import ExportSettings, Settings
    from kalshictl.research.iceberg import IcebergExporter

_MASK = (1 << 64) - 1


@dataclass
class ColdDay:
    """What the cold tier holds of one table-day."""

    table: str
    day: date
    rows: int
    checksum: str
    location: str
    snapshot_id: int | None = None
    bytes: int = 0
    ok: bool = True  # the read-back equals what was written (checksums compared where the store can)


class ColdStore(Protocol):
    """The cold tier's operations on one table-day (see module docs)."""

    format: str

    def export_day(self, conn: psycopg.Connection, table: str, day: date) -> ColdDay: ...

    def verify_day(self, table: str, day: date) -> ColdDay: ...

    def read_day(self, table: str, day: date, *, ticker: str | None = None) -> pa.Table: ...

    def total_bytes(self) -> int: ...


def _canonical(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value


def content_checksum(table: pa.Table) -> tuple[int, str]:
    """(rows, checksum) of a pyarrow table's rows, independent of their order and of the file layout."""
    total = 0
    names = table.column_names
    for batch in table.to_batches(max_chunksize=50_000):
        for row in batch.to_pylist():
            body = orjson.dumps([_canonical(row[n]) for n in names])
            total = (total + int.from_bytes(hashlib.blake2b(body, digest_size=8).digest(), "big")) & _MASK
    return table.num_rows, f"{total:016x}"


class ParquetColdStore:
    """The cold tier as ``kalshictl export``'s Parquet layout on S3 (see module docs)."""

    format = "parquet"

    def __init__(self, settings: ExportSettings, *, endpoint_url: str | None = None, client: Any = None) -> None:
        if not settings.s3.dest:
            raise KalshiCtlError(
                "exporter.s3.dest is not set", hint="set it to s3://bucket/prefix", exit_code=ExitCode.USAGE
            )
        self.settings = settings
        self.bucket, self.prefix = ex.parse_dest(settings.s3.dest)
        self.client = client or ex.s3_client(settings.s3, endpoint_url)

    def _manifest_key(self, table: str, day: date) -> str:
        return ex._key(ex.partition_prefix(self.prefix, table, day), ex.MANIFEST)

    def manifest(self, table: str, day: date) -> dict | None:
        """A day's manifest, or None when the day was never (completely) exported."""
        return ex._get_json(self.client, self.bucket, self._manifest_key(table, day))

    def export_day(self, conn: psycopg.Connection, table: str, day: date) -> ColdDay:
        """(Re)write one table-day from production (one REPEATABLE READ snapshot; the manifest is written last)."""
        job = ex.ExportJob([table], [day], self.bucket, self.prefix, force=True)
        columns = ex.table_columns(conn, table)
        with tempfile.TemporaryDirectory(prefix="kalshictl-cold-") as tmp:
            res = ex.export_partition(conn, self.client, self.settings, job, table, day, columns, Path(tmp),
                                      ex.ExportHooks())  # fmt: skip
        job.results.append(res)
        ex._update_index(self.client, job)
        return ColdDay(table, day, res.rows, "", res.manifest_key, None, res.bytes)

    def _read_files(self, manifest: dict, *, check: bool, ticker: str | None = None) -> pa.Table:
        pa = import_extra("pyarrow", "export")
        pq = import_extra("pyarrow.parquet", "export")
        tables = []
        for f in manifest.get("files", []):
            body = self.client.get_object(Bucket=self.bucket, Key=f["key"])["Body"].read()
            if check and hashlib.sha256(body).hexdigest() != f["sha256"]:
                raise KalshiCtlError(f"cold tier: {f['key']} does not match the SHA-256 in its manifest")
            filters = [("ticker", "=", ticker)] if ticker is not None else None
            tables.append(pq.read_table(io.BytesIO(body), filters=filters))
        if not tables:
            return pa.table({})
        return pa.concat_tables(tables) if len(tables) > 1 else tables[0]

    def verify_day(self, table: str, day: date) -> ColdDay:
        """Read the day back from S3: every part's SHA-256, the row count, the content checksum (also written into
        the manifest as ``verified_rows``/``content_checksum``)."""
        key = self._manifest_key(table, day)
        manifest = self.manifest(table, day)
        if not manifest or not manifest.get("complete"):
            raise KalshiCtlError(f"cold tier: no complete export of {table} {day} at s3://{self.bucket}/{key}")
        data = self._read_files(manifest, check=True)
        rows, checksum = content_checksum(data)
        if rows != manifest.get("rows"):
            raise KalshiCtlError(f"cold tier: {table} {day} holds {rows} rows, its manifest says {manifest['rows']}")
        manifest["verified_rows"], manifest["content_checksum"] = rows, checksum
        ex._put_json(self.client, self.bucket, key, manifest)
        return ColdDay(table, day, rows, checksum, key, None, int(manifest.get("bytes", 0)))

    def read_day(self, table: str, day: date, *, ticker: str | None = None) -> pa.Table:
        """A day's rows (one market's with ``ticker``); an empty table when the day is not in the cold tier."""
        manifest = self.manifest(table, day)
        if not manifest:
            pa = import_extra("pyarrow", "export")
            return pa.table({})
        return self._read_files(manifest, check=False, ticker=ticker)

    def total_bytes(self) -> int:
        """Bytes of every object under the prefix."""
        total = 0
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix)
        for page in pages:
            total += sum(int(o["Size"]) for o in page.get("Contents", []))
        return total


class IcebergColdStore:
    """The cold tier as the Iceberg tables of ``kalshictl export`` (kalshictl/research/iceberg.py): one snapshot per
    export of a day; verification compares production's and the table's count and checksum of the day
    (``verify_table_day``); reads scan the day (and market) and convert back to production's integers."""

    format = "iceberg"

    def __init__(self, settings: ExportSettings, *, endpoint_url: str | None = None) -> None:
        if not settings.s3.dest and not settings.iceberg.warehouse:
            raise KalshiCtlError(
                "exporter.s3.dest is not set", hint="set it to s3://bucket/prefix", exit_code=ExitCode.USAGE
            )
        if endpoint_url:
            settings = settings.model_copy(update={"s3": settings.s3.model_copy(update={"endpoint_url": endpoint_url})})
        self.settings = settings
        self._exporter: IcebergExporter | None = None
        self._snapshots: dict[tuple[str, date], int] = {}

    def _open(self) -> IcebergExporter:
        from kalshictl.research.iceberg import IcebergExporter

        if self._exporter is None:
            self._exporter = IcebergExporter.open(self.settings)
        return self._exporter

    def close(self) -> None:
        if self._exporter is not None:
            self._exporter.close()
            self._exporter = None

    def export_day(self, conn: psycopg.Connection, table: str, day: date) -> ColdDay:
        """One snapshot replacing the day (read from production by the exporter's own connection)."""
        done = self._open().export_table_day(table, day)
        self._snapshots[(table, day)] = done.snapshot_id
        return ColdDay(table, day, done.rows, done.checksum, done.metadata_location, done.snapshot_id)

    def verify_day(self, table: str, day: date) -> ColdDay:
        """Production and the table's snapshot of this export: count and checksum must be equal."""
        exporter = self._open()
        check = exporter.verify_table_day(table, day, snapshot_id=self._snapshots.get((table, day)))
        location = exporter.catalog.load_table((self.settings.iceberg.namespace, table)).metadata_location
        return ColdDay(table, day, check.iceberg_rows, check.iceberg_checksum, location, check.snapshot_id, 0,
                       check.ok)  # fmt: skip

    def read_day(self, table: str, day: date, *, ticker: str | None = None) -> pa.Table:
        """A day's rows (one market's with ``ticker``) in production's integers."""
        from pyiceberg.exceptions import NoSuchTableError
        from pyiceberg.expressions import AlwaysTrue, And, BooleanExpression, EqualTo

        from kalshictl.research import iceberg as ice
        from kalshictl.research import iceberg_types as types

        pa = import_extra("pyarrow", "export")
        exporter = self._open()
        cols = ice.production_columns(exporter.conn, table)
        try:
            tbl = exporter.catalog.load_table((self.settings.iceberg.namespace, table))
        except NoSuchTableError:
            return pa.table({})
        tcol = types.time_column(table)  # None: a state table, exported whole
        where: BooleanExpression = ice._day_filter(tcol, day) if tcol is not None else AlwaysTrue()
        if ticker is not None:
            where = And(where, EqualTo(term="ticker", value=ticker))
        arrow = tbl.scan(row_filter=where, selected_fields=tuple(c.name for c in cols)).to_arrow()
        names = [c.name for c in cols]
        return pa.Table.from_pylist([dict(zip(names, r, strict=True)) for r in types.to_production_rows(arrow, cols)])

    def total_bytes(self) -> int:
        """Bytes of every object under the warehouse (data, manifests, metadata)."""
        location = (self.settings.iceberg.warehouse or self.settings.s3.dest or "").rstrip("/")
        bucket, prefix = ex.parse_dest(location)
        client = ex.s3_client(self.settings.s3)
        total = 0
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            total += sum(int(o["Size"]) for o in page.get("Contents", []))
        return total


def open_cold_store(settings: ExportSettings, *, endpoint_url: str | None = None) -> ColdStore:
    """The configured cold tier: ``exporter.format`` (Iceberg by default, or plain Parquet) under ``exporter.s3``."""
    if settings.format == "parquet":
        return ParquetColdStore(settings, endpoint_url=endpoint_url)
    return IcebergColdStore(settings, endpoint_url=endpoint_url)


def cold_days(conn: psycopg.Connection, table: str) -> set[date]:
    """Days of ``table`` whose production partitions were dropped: their rows live in the cold tier (plus any late
    row that reached production after the drop)."""
    if one_row(conn.execute("SELECT to_regclass('cold_exports')"))[0] is None:
        return set()
    rows = conn.execute(
        "SELECT day FROM cold_exports WHERE table_name = %s AND dropped_at IS NOT NULL", (table,)
    ).fetchall()
    return {r[0] for r in rows}


def _levels(value: Any) -> list[list[int]]:
    """Levels as ``[[price, size], ...]`` (Parquet gives structs, the Iceberg reader lists)."""
    return [[int(lv["price"]), int(lv["size"])] if isinstance(lv, dict) else [int(lv[0]), int(lv[1])]
            for lv in value or ()]  # fmt: skip


class ColdReader:
    """Order-book rows of the days that left production, read from the cold tier, shaped like production's rows
    (kalshictl/research/book_query.py reads both tiers through it)."""

    def __init__(self, conn: psycopg.Connection, store: ColdStore) -> None:
        self.store = store
        self.snapshot_days = sorted(cold_days(conn, "orderbook_snapshots"))
        self.delta_days = sorted(cold_days(conn, "orderbook_deltas"))

    def _days(self, days: list[date], from_us: int, to_us: int) -> list[date]:
        from kalshictl.research.times import day_bounds

        return [d for d in days if day_bounds(d)[1] > from_us and day_bounds(d)[0] <= to_us]

    def snapshots(self, ticker: str, from_us: int, to_us: int, sources: tuple[str, ...]) -> list[tuple]:
        """(snapshot_ts, exchange_ts, source, gatherer, yes_bids, no_bids) of cold days with from <= ts <= to."""
        out = []
        for day in self._days(self.snapshot_days, from_us, to_us):
            for r in self.store.read_day("orderbook_snapshots", day, ticker=ticker).to_pylist():
                if from_us <= r["snapshot_ts"] <= to_us and r["source"] in sources:
                    out.append((r["snapshot_ts"], r["exchange_ts"], r["source"], r["gatherer"],
                                _levels(r["yes_bids"]), _levels(r["no_bids"])))  # fmt: skip
        return out

    def latest_snapshot(
        self, ticker: str, at_us: int, sources: tuple[str, ...], *, after_us: int | None = None
    ) -> tuple | None:
        """The latest cold snapshot anchored at or before ``at_us`` (days searched newest first); with ``after_us``
        (production already has a snapshot then) only days that could hold a later one are read."""
        from kalshictl.research.times import day_bounds

        days = [d for d in self.snapshot_days if day_bounds(d)[0] <= at_us]
        if after_us is not None:
            days = [d for d in days if day_bounds(d)[1] > after_us]
        for day in reversed(days):
            rows = [
                r
                for r in self.snapshots(ticker, day_bounds(day)[0], min(at_us, day_bounds(day)[1] - 1), sources)
                if (r[1] if r[1] is not None else r[0]) <= at_us
            ]
            if rows:  # production's order: snapshot_ts DESC, source DESC, gatherer ASC
                rows.sort(key=lambda r: r[3])
                rows.sort(key=lambda r: (r[0], r[2]), reverse=True)
                return rows[0]
        return None

    def deltas(self, ticker: str, after_us: int, until_us: int) -> list[tuple]:
        """(exchange_ts, side, price, size_delta, occurrence) of cold days with after < ts <= until, unordered."""
        out = []
        for day in self._days(self.delta_days, after_us + 1, until_us):
            for r in self.store.read_day("orderbook_deltas", day, ticker=ticker).to_pylist():
                if after_us < r["exchange_ts"] <= until_us:
                    out.append((r["exchange_ts"], r["side"], r["price"], r["size_delta"], r["occurrence"]))
        return out


def configured_store(conn: psycopg.Connection, settings: Settings | None, tables: Iterable[str]) -> ColdStore | None:
    """The cold tier of ``settings`` (its ``exporter`` section) when some day of ``tables`` left production; None
    when none did. A day that left production with no ``exporter.s3.dest`` configured is an error: its rows are
    only in the cold tier."""
    dropped = [t for t in tables if cold_days(conn, t)]
    if not dropped:
        return None
    exporter = settings.exporter if settings is not None else None
    if exporter is None or not exporter.s3.dest:
        raise KalshiCtlError(
            f"days of {', '.join(dropped)} left production for the cold tier, and exporter.s3.dest is not set",
            hint="give --config a file whose exporter section names the cold tier (docs/deduplicator.md)",
            exit_code=ExitCode.USAGE,
        )
    return open_cold_store(exporter)


def close_store(store: ColdStore | None) -> None:
    """Release what a store holds open (the Iceberg store's catalog and connection)."""
    close = getattr(store, "close", None)
    if close is not None:
        close()


BOOK_TABLES = ("orderbook_snapshots", "orderbook_deltas")


def cold_reader(conn: psycopg.Connection, settings: Settings) -> ColdReader | None:
    """A reader of the cold tier when some order-book day left production (see :func:`configured_store`)."""
    store = configured_store(conn, settings, BOOK_TABLES)
    return ColdReader(conn, store) if store is not None else None
