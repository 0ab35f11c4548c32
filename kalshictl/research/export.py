"""Export production tables to S3 as Parquet, one partition per table and UTC day (optionally per series).

Layout under ``s3://bucket/prefix``::

    table=trades/date=2026-11-27/part-0000.parquet             (or .../date=D/series=KXFED/part-0000.parquet)
    table=trades/date=2026-11-27/_manifest.json                 commit record of that partition, written last
    _manifest.json                                              index of every partition manifest, updated per run

Types are exact: prices and sizes stay integers (``int32``/``int64``) with Parquet field metadata naming the unit
(``kalshictl.unit``: ``1e-4 USD``, ``1e-2 contracts``, ``us since epoch``); order-book levels are
``list<struct<price: int32, size: int64>>``; JSON payloads are JSON text; uuids are text.

Idempotent and resumable: a partition whose manifest is complete, final (its day ended ``settle_s`` ago) and whose
files all exist with the recorded sizes is skipped. Otherwise its old manifest is deleted first, its rows are read in
one ``REPEATABLE READ READ ONLY`` transaction through a server-side cursor (bounded memory), each part file is written
locally and uploaded as a complete object, stray parts of an earlier attempt are deleted, and the manifest is written
last. A crash therefore leaves no manifest for the partition it was in, and readers that follow manifests never see a
half-written partition; the next run redoes it.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import orjson

from kalshictl.errors import ConfigError, KalshiCtlError, import_extra
from kalshictl.research.times import day_bounds
from kalshictl.schema import PRICE_UNIT, SIZE_UNIT, TABLES
from kalshictl.units import now_us

if TYPE_CHECKING:
    import psycopg
    import pyarrow as pa

    from kalshictl.config import ExportSettings, S3Settings

MANIFEST = "_manifest.json"
FORMAT_VERSION = 1
# the unit an order-book side's field states (its prices and sizes, kalshictl/schema.py)
LEVELS_EXPORT_UNIT = f"price {PRICE_UNIT}, size {SIZE_UNIT}; ascending by price"


@dataclass(frozen=True)
class Column:
    name: str
    pg_type: str


@dataclass
class PartFile:
    """One uploaded Parquet file."""

    key: str
    rows: int
    bytes: int
    sha256: str
    series: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out = {"key": self.key, "rows": self.rows, "bytes": self.bytes, "sha256": self.sha256}
        if self.series is not None:
            out["series"] = self.series
        return out


@dataclass
class PartitionResult:
    table: str
    day: date
    status: str  # exported | skipped
    rows: int = 0
    bytes: int = 0
    files: int = 0
    manifest_key: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "date": self.day.isoformat(),
            "status": self.status,
            "rows": self.rows,
            "bytes": self.bytes,
            "files": self.files,
            "manifest": self.manifest_key,
        }


@dataclass
class ExportHooks:
    """Callbacks: progress events for a UI, and ``after_part`` (tests inject crashes there)."""

    on_partition_start: Callable[[str, date], None] | None = None
    on_rows: Callable[[int], None] | None = None
    on_partition_done: Callable[[PartitionResult], None] | None = None
    after_part: Callable[[PartFile], None] | None = None


@dataclass
class ExportJob:
    tables: list[str]
    days: list[date]
    bucket: str
    prefix: str
    by_series: bool = False
    force: bool = False
    results: list[PartitionResult] = field(default_factory=list)


def parse_dest(dest: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` -> (bucket, prefix without surrounding slashes)."""
    if not dest.startswith("s3://") or len(dest) <= 5:
        raise ConfigError(f"--dest: expected s3://bucket/prefix, got {dest!r}")
    bucket, _, prefix = dest[5:].partition("/")
    if not bucket:
        raise ConfigError(f"--dest: no bucket in {dest!r}")
    return bucket, prefix.strip("/")


def s3_client(s3: S3Settings, endpoint_url: str | None = None) -> Any:
    """A boto3 S3 client for AWS or any S3-compatible endpoint (credentials: config secrets or the boto3 chain)."""
    boto3 = import_extra("boto3", "export")
    from botocore.config import Config

    kwargs: dict[str, Any] = {
        "endpoint_url": endpoint_url or s3.endpoint_url,
        "region_name": s3.region,
        "config": Config(s3={"addressing_style": s3.addressing_style}, retries={"max_attempts": 5, "mode": "standard"}),
    }
    if s3.access_key_id is not None:
        kwargs["aws_access_key_id"] = s3.access_key_id.resolve()
    if s3.secret_access_key is not None:
        kwargs["aws_secret_access_key"] = s3.secret_access_key.resolve()
    return boto3.client("s3", **kwargs)


# -- schema ------------------------------------------------------------------------------------------------------


def table_columns(conn: psycopg.Connection, table: str) -> list[Column]:
    """Columns of a production table in table order."""
    rows = conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'public' AND table_name = %s ORDER BY ordinal_position",
        (table,),
    ).fetchall()
    if not rows:
        raise KalshiCtlError(f"table {table} not found in production", hint="run `kalshictl migrate`")
    return [Column(n, t) for n, t in rows]


def arrow_schema(table: str, columns: list[Column], *, by_series: bool) -> pa.Schema:
    """The Parquet schema: exact integer types with unit metadata."""
    pa = import_extra("pyarrow", "export")

    level = pa.list_(pa.struct([pa.field("price", pa.int32()), pa.field("size", pa.int64())]))
    base = {
        "bigint": pa.int64(),
        "integer": pa.int32(),
        "smallint": pa.int16(),
        "boolean": pa.bool_(),
        "timestamp with time zone": pa.timestamp("us", tz="UTC"),
        "double precision": pa.float64(),
        "bytea": pa.binary(),  # lifecycle_events.digest
        "ARRAY": pa.list_(pa.string()),  # sequence_gaps.tickers (text[])
    }
    spec = TABLES[table]
    fields = []
    for col in columns:
        known = spec.find(col.name)
        levels = known is not None and known.levels
        typ = level if levels else base.get(col.pg_type, pa.string())
        meta = {"kalshictl.pg_type": col.pg_type}
        if known is not None and known.unit:
            meta["kalshictl.unit"] = LEVELS_EXPORT_UNIT if levels else known.unit
        fields.append(pa.field(col.name, typ, metadata=meta))
    if by_series:
        fields.append(pa.field("series", pa.string(), metadata={"kalshictl.derived": "series of the market ticker"}))
    info = {"table": table, "time_column": spec.time_column, "format_version": FORMAT_VERSION}
    return pa.schema(fields, metadata={"kalshictl": orjson.dumps(info)})


def _select(table: str, columns: list[Column], by_series: bool) -> str:
    spec = TABLES[table]
    exprs = []
    for col in columns:
        if (known := spec.find(col.name)) is not None and known.levels:
            exprs.append(f"t.{col.name}")
        elif col.pg_type in ("uuid", "jsonb", "json", "numeric"):
            exprs.append(f"t.{col.name}::text")
        else:
            exprs.append(f"t.{col.name}")
    tcol = spec.time_column
    sql = f"SELECT {', '.join(exprs)}"
    order = f"t.ticker, t.{tcol}" if any(c.name == "ticker" for c in columns) else f"t.{tcol}"
    if by_series:
        sql += ", COALESCE(e.series_ticker, split_part(t.ticker, '-', 1), '_none') AS series"
        sql += f" FROM {table} t LEFT JOIN markets m ON m.ticker = t.ticker"
        sql += " LEFT JOIN events e ON e.event_ticker = m.event_ticker"
        order = "series, " + order
    else:
        sql += f" FROM {table} t"
    return sql + f" WHERE t.{tcol} >= %s AND t.{tcol} < %s ORDER BY {order}"


def _to_table(rows: list[tuple], schema: pa.Schema) -> pa.Table:
    pa = import_extra("pyarrow", "export")

    cols: list[Sequence[Any]] = list(zip(*rows, strict=True)) if rows else [[] for _ in schema]
    arrays = []
    for f, values in zip(schema, cols, strict=True):
        if pa.types.is_list(f.type) and pa.types.is_struct(f.type.value_type):  # order-book levels
            values = [None if v is None else [(int(p), int(s)) for p, s in v] for v in values]
        arrays.append(pa.array(values, type=f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


# -- S3 helpers ----------------------------------------------------------------------------------------------------


def _key(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p)


def _get_json(client: Any, bucket: str, key: str) -> dict | None:
    from botocore.exceptions import ClientError

    try:
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:  # NoSuchKey, or a bare 404 on some endpoints
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
            return None
        raise
    return orjson.loads(body)


def _put_json(client: Any, bucket: str, key: str, data: dict) -> None:
    client.put_object(
        Bucket=bucket, Key=key, Body=orjson.dumps(data, option=orjson.OPT_INDENT_2), ContentType="application/json"
    )


def _object_size(client: Any, bucket: str, key: str) -> int | None:
    from botocore.exceptions import ClientError

    try:
        return int(client.head_object(Bucket=bucket, Key=key)["ContentLength"])
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise


def _list_keys(client: Any, bucket: str, prefix: str) -> list[str]:
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
        keys += [obj["Key"] for obj in page.get("Contents", [])]
    return keys


def partition_prefix(prefix: str, table: str, day: date) -> str:
    return _key(prefix, f"table={table}", f"date={day.isoformat()}")


def manifest_is_complete(client: Any, bucket: str, manifest: dict | None, *, by_series: bool) -> bool:
    """True if a partition manifest is complete and final, in this layout, and every file exists with its size."""
    if not manifest or not manifest.get("complete") or not manifest.get("final"):
        return False
    if bool(manifest.get("by_series")) != by_series or manifest.get("format_version") != FORMAT_VERSION:
        return False
    return all(_object_size(client, bucket, f["key"]) == f["bytes"] for f in manifest.get("files", []))


# -- the export --------------------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _batches(cur: Any, size: int) -> Iterator[list[tuple]]:
    while True:
        rows = cur.fetchmany(size)
        if not rows:
            return
        yield rows


class PartWriter:
    """Write a partition's rows into Parquet part files of at most ``rows_per_file`` rows (one series per file when
    partitioned by series); each finished file is uploaded as a complete object, then deleted locally."""

    def __init__(self, client: Any, job: ExportJob, settings: ExportSettings, part_prefix: str, schema: pa.Schema,
                 local_stem: Path, after_part: Callable[[PartFile], None] | None = None) -> None:  # fmt: skip
        self._pq = import_extra("pyarrow.parquet", "export")
        self.client, self.job, self.part_prefix, self.schema = client, job, part_prefix, schema
        self.rows_per_file = settings.rows_per_file
        self.compression = None if settings.compression == "none" else settings.compression
        self.local_stem = local_stem
        self.after_part = after_part
        self.files: list[PartFile] = []
        self._counters: dict[str | None, int] = {}  # next part number per series
        self._writer: Any = None
        self._local: Path | None = None
        self._series: str | None = None
        self._rows = 0

    def write(self, series: str | None, rows: list[tuple]) -> None:
        """Append rows of one series (``None`` when not partitioned by series)."""
        while rows:
            if self._writer is not None and (series != self._series or self._rows >= self.rows_per_file):
                self.close()
            if self._writer is None:
                self._series = series
                self._local = self.local_stem.with_name(f"{self.local_stem.name}-{len(self.files)}.parquet")
                self._writer = self._pq.ParquetWriter(str(self._local), self.schema, compression=self.compression)
            piece, rows = rows[: self.rows_per_file - self._rows], rows[self.rows_per_file - self._rows :]
            self._writer.write_table(_to_table(piece, self.schema))
            self._rows += len(piece)

    def close(self) -> None:
        """Finish the open part file (if any): upload it, record it, delete the local copy."""
        if self._writer is None or self._local is None:
            return
        self._writer.close()
        self._writer = None
        n = self._counters.get(self._series, 0)
        self._counters[self._series] = n + 1
        sub = f"series={quote(self._series, safe='')}" if self.job.by_series and self._series is not None else ""
        key = _key(self.part_prefix, sub, f"part-{n:04d}.parquet")
        size = self._local.stat().st_size
        self.client.upload_file(str(self._local), self.job.bucket, key)  # a complete object or nothing
        part = PartFile(key, self._rows, size, _sha256(self._local), self._series if self.job.by_series else None)
        self._local.unlink()
        self.files.append(part)
        self._rows = 0
        if self.after_part:
            self.after_part(part)


def _series_groups(rows: list[tuple], by_series: bool) -> list[tuple[str | None, list[tuple]]]:
    """Consecutive runs of one series (the query orders by series; the series is the last column)."""
    if not by_series:
        return [(None, rows)]
    groups: list[tuple[str | None, list[tuple]]] = []
    for row in rows:
        if not groups or groups[-1][0] != row[-1]:
            groups.append((row[-1], []))
        groups[-1][1].append(row)
    return groups


def build_manifest(
    table: str, day: date, schema: pa.Schema, files: list[PartFile], *, by_series: bool, settle_s: float
) -> dict[str, Any]:
    """A partition's commit record: its files (key, rows, bytes, sha256), schema with unit metadata, time range, and
    whether the day is final (ended ``settle_s`` ago, so no late row can still arrive)."""
    start, end = day_bounds(day)
    schema_desc = [
        {
            "name": f.name,
            "type": str(f.type),
            "metadata": {k.decode(): v.decode() for k, v in (f.metadata or {}).items()},
        }
        for f in schema
    ]
    return {
        "format_version": FORMAT_VERSION,
        "table": table,
        "date": day.isoformat(),
        "time_column": TABLES[table].time_column,
        "from_us": start,
        "to_us": end,
        "by_series": by_series,
        "rows": sum(f.rows for f in files),
        "bytes": sum(f.bytes for f in files),
        "files": [{**f.as_dict(), "schema": schema_desc} for f in files],
        "schema": schema_desc,
        "complete": True,
        "final": end + int(settle_s * 1_000_000) <= now_us(),
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def export_partition(
    conn: psycopg.Connection,
    client: Any,
    settings: ExportSettings,
    job: ExportJob,
    table: str,
    day: date,
    columns: list[Column],
    workdir: Path,
    hooks: ExportHooks,
) -> PartitionResult:
    """Export one (table, day); see the module docs for the crash-safety order."""
    part_prefix = partition_prefix(job.prefix, table, day)
    manifest_key = _key(part_prefix, MANIFEST)
    old = _get_json(client, job.bucket, manifest_key)
    if not job.force and manifest_is_complete(client, job.bucket, old, by_series=job.by_series):
        assert old is not None
        files = len(old.get("files", []))
        return PartitionResult(table, day, "skipped", old.get("rows", 0), old.get("bytes", 0), files, manifest_key)
    client.delete_object(Bucket=job.bucket, Key=manifest_key)  # from here on the partition is incomplete
    schema = arrow_schema(table, columns, by_series=job.by_series)
    parts = PartWriter(client, job, settings, part_prefix, schema, workdir / f"{table}-{day}", hooks.after_part)
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        with conn.cursor(name=f"kalshictl_export_{table}") as cur:
            cur.itersize = settings.batch_rows
            cur.execute(_select(table, columns, job.by_series), day_bounds(day))
            for rows in _batches(cur, settings.batch_rows):
                if hooks.on_rows:
                    hooks.on_rows(len(rows))
                for series, chunk in _series_groups(rows, job.by_series):
                    parts.write(series, chunk)
            parts.close()
    keep = {f.key for f in parts.files}
    for stray in _list_keys(client, job.bucket, part_prefix):
        if stray not in keep and not stray.endswith(MANIFEST):
            client.delete_object(Bucket=job.bucket, Key=stray)
    manifest = build_manifest(table, day, schema, parts.files, by_series=job.by_series, settle_s=settings.settle_s)
    _put_json(client, job.bucket, manifest_key, manifest)
    return PartitionResult(table, day, "exported", manifest["rows"], manifest["bytes"], len(parts.files), manifest_key)


def run_export(
    conn: psycopg.Connection, client: Any, settings: ExportSettings, job: ExportJob, hooks: ExportHooks | None = None
) -> list[PartitionResult]:
    """Export every (table, day) of ``job``; returns the partition results (also in ``job.results``)."""
    hooks = hooks or ExportHooks()
    for table in job.tables:
        if table not in TABLES:
            raise ConfigError(f"--table: unknown table {table!r} (one of {', '.join(TABLES)})")
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        client.head_bucket(Bucket=job.bucket)
    except (BotoCoreError, ClientError) as exc:
        raise KalshiCtlError(
            f"cannot reach bucket {job.bucket}: {exc}", hint="check --endpoint-url and credentials"
        ) from None
    if not conn.autocommit:
        raise KalshiCtlError("run_export needs an autocommit connection (each partition is its own transaction)")
    columns = {t: table_columns(conn, t) for t in job.tables}
    with tempfile.TemporaryDirectory(prefix="kalshictl-export-") as tmp:
        for table in job.tables:
            for day in job.days:
                if hooks.on_partition_start:
                    hooks.on_partition_start(table, day)
                res = export_partition(conn, client, settings, job, table, day, columns[table], Path(tmp), hooks)
                job.results.append(res)
                if hooks.on_partition_done:
                    hooks.on_partition_done(res)
    _update_index(client, job)
    return job.results


def _update_index(client: Any, job: ExportJob) -> None:
    """Merge this run's partitions into ``prefix/_manifest.json`` (an index; partition manifests are authoritative)."""
    key = _key(job.prefix, MANIFEST)
    index = _get_json(client, job.bucket, key) or {"format_version": FORMAT_VERSION, "partitions": {}}
    for r in job.results:
        index["partitions"][f"{r.table}/{r.day.isoformat()}"] = {
            "manifest": r.manifest_key,
            "rows": r.rows,
            "bytes": r.bytes,
            "files": r.files,
        }
    index["updated_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    _put_json(client, job.bucket, key, index)


def env_crash_hook() -> Callable[[PartFile], None] | None:
    """``KALSHICTL_EXPORT_CRASH_AFTER_PARTS=N`` kills the process after N uploaded parts (crash tests only)."""
    raw = os.environ.get("KALSHICTL_EXPORT_CRASH_AFTER_PARTS")
    if not raw:
        return None
    limit, seen = int(raw), [0]

    def hook(_part: PartFile) -> None:
        seen[0] += 1
        if seen[0] >= limit:
            os._exit(70)

    return hook
