"""Export production tables to Apache Iceberg tables on S3, one atomic snapshot per table and UTC day.

The public API (also used by the cold tier):

* :func:`export_table_day` — read one table-day from production in one ``REPEATABLE READ READ ONLY`` transaction,
  write its Parquet data files, and commit **one** snapshot that replaces that day's data files (an overwrite
  filtered on the day partition; the first export of a day is an append). Readers see the old day or the new day,
  never half. A state table (``series``, ``events``, ``markets``) is replaced whole.
* :func:`verify_table_day` — count and checksum the day in production and in the Iceberg table (read back through
  pyiceberg and converted to production's integers), computed the same way (:func:`iceberg_types.row_checksum`).

Tables are partitioned by the hidden transform ``day(<time column>)``; the catalog is the Iceberg SQL/JDBC catalog's
tables in the configured database (docs/research.md, "Iceberg tables"). A crash before the commit leaves only
unreferenced data files (no snapshot names them), which the next export of that day does not see.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from kalshictl.db.rows import one_row
from kalshictl.errors import ConfigError, KalshiCtlError, import_extra
from kalshictl.research import iceberg_types as types
from kalshictl.research.export import table_columns
from kalshictl.research.times import day_bounds

if TYPE_CHECKING:
    import psycopg
    from pyiceberg.catalog import Catalog
    from pyiceberg.expressions import BooleanExpression
    from pyiceberg.table import Table

    from kalshictl.config import DatabaseSettings, ExportSettings, S3Settings

EPOCH_DAY = date(1970, 1, 1)
# Parquet settings of new tables. A 128 KiB dictionary page (pyiceberg's default: 2 MiB) makes the writer give up
# dictionaries early on unique columns (times, trade ids), which then compress far better: half the bytes per row
# in bench/bench_export.py (docs/performance.md); few-valued columns (side, source, gatherer) keep theirs.
WRITE_PROPERTIES = {
    "write.parquet.compression-codec": "zstd",
    "write.parquet.compression-level": "3",
    "write.parquet.dict-size-bytes": str(128 << 10),
}


@dataclass(frozen=True)
class DayExport:
    """What one export committed: the rows and checksum read from production, and the snapshot holding them."""

    table: str
    day: date | None  # None: a state table, exported whole
    rows: int
    checksum: str
    metadata_location: str
    snapshot_id: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "day": self.day.isoformat() if self.day else None,
            "rows": self.rows,
            "checksum": self.checksum,
            "metadata_location": self.metadata_location,
            "snapshot_id": self.snapshot_id,
        }


@dataclass(frozen=True)
class DayVerification:
    """Production against the Iceberg table for one table-day: equal counts and checksums, or not."""

    table: str
    day: date | None
    production_rows: int
    production_checksum: str
    iceberg_rows: int
    iceberg_checksum: str
    snapshot_id: int | None

    @property
    def ok(self) -> bool:
        return (self.production_rows, self.production_checksum) == (self.iceberg_rows, self.iceberg_checksum)

    def as_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "day": self.day.isoformat() if self.day else None,
            "ok": self.ok,
            "production_rows": self.production_rows,
            "production_checksum": self.production_checksum,
            "iceberg_rows": self.iceberg_rows,
            "iceberg_checksum": self.iceberg_checksum,
            "snapshot_id": self.snapshot_id,
        }


# -- the catalog -------------------------------------------------------------------------------------------------


def file_io_properties(s3: S3Settings) -> dict[str, str]:
    """pyiceberg's PyArrow FileIO settings for S3 (credentials: config secrets, else the AWS default chain)."""
    props = {"s3.region": s3.region}
    if s3.endpoint_url:
        props["s3.endpoint"] = s3.endpoint_url
    if s3.addressing_style == "virtual":
        props["s3.force-virtual-addressing"] = "true"
    if s3.access_key_id is not None:
        props["s3.access-key-id"] = s3.access_key_id.resolve()
    if s3.secret_access_key is not None:
        props["s3.secret-access-key"] = s3.secret_access_key.resolve()
    return props


def _postgres_engine(db: DatabaseSettings, schema: str) -> Any:
    """A SQLAlchemy engine whose connections are the project's own (TLS verified, secret resolved at connect) with
    ``search_path`` set to the catalog's schema."""
    import_extra("sqlalchemy", "export")
    from sqlalchemy import create_engine

    from kalshictl.db.connect import connect

    def creator() -> Any:
        return connect(db, options=f"-c search_path={schema}")

    # a small pool: a commit takes several catalog round trips, each would otherwise pay a new TLS + SCRAM login
    return create_engine("postgresql+psycopg://", creator=creator, pool_size=2, max_overflow=2, pool_pre_ping=True)


def _check_catalog_schema(db: DatabaseSettings, schema: str) -> None:
    """Fail clearly when the catalog's schema is missing or not writable by this role."""
    from kalshictl.db.connect import connect

    with connect(db, autocommit=True) as conn:
        exists = one_row(conn.execute("SELECT to_regnamespace(%s) IS NOT NULL", (schema,)))[0]
        usage = create = created = False
        if exists:  # (a privilege list in one has_schema_privilege call means *any* of them: ask one by one)
            usage, create, created = one_row(
                conn.execute(
                    "SELECT has_schema_privilege(%s, 'USAGE'), has_schema_privilege(%s, 'CREATE'),"
                    " to_regclass(format('%%I.iceberg_tables', %s::text)) IS NOT NULL",
                    (schema, schema, schema),
                )
            )
    if not (usage and (create or created)):
        problem = "does not exist" if not exists else "is not usable (USAGE, and CREATE for a new catalog) by this role"
        raise KalshiCtlError(
            f"exporter.iceberg.catalog_schema: schema {schema!r} {problem}",
            hint="run `kalshictl init-db --target production` (it creates schema iceberg for the exporter role)",
        )


def open_catalog(settings: ExportSettings, *, warehouse: str | None = None) -> Catalog:
    """The Iceberg SQL catalog of ``exporter.iceberg`` (PostgreSQL by default, or a SQLite file)."""
    import_extra("pyiceberg", "export")
    from pyiceberg.catalog import Catalog as _Catalog
    from pyiceberg.catalog.sql import SqlCatalog

    ice = settings.iceberg
    location = warehouse or ice.warehouse or settings.s3.dest
    if not location:
        raise ConfigError("exporter.iceberg.warehouse: no warehouse (set it, or exporter.s3.dest, or pass --dest)")
    props = {"warehouse": location.rstrip("/"), **file_io_properties(settings.s3)}
    if ice.sqlite_path:
        return SqlCatalog(ice.catalog_name, uri=f"sqlite:///{ice.sqlite_path}", **props)
    db = ice.catalog_database or settings.production
    _check_catalog_schema(db, ice.catalog_schema)

    class _ConnectedSqlCatalog(SqlCatalog):
        """pyiceberg's SQL catalog on an engine we build (it otherwise wants a URI holding the password)."""

        def __init__(self, name: str, engine: Any, **properties: str) -> None:
            _Catalog.__init__(self, name, **properties)
            self.engine = engine
            self._init_catalog()

    return _ConnectedSqlCatalog(ice.catalog_name, _postgres_engine(db, ice.catalog_schema), **props)


# -- tables ------------------------------------------------------------------------------------------------------


def production_columns(conn: psycopg.Connection, table: str) -> list[types.Column]:
    """The exported columns of a production table (read as the Parquet export reads them)."""
    return types.columns(table, [(c.name, c.pg_type) for c in table_columns(conn, table)])


def ensure_table(catalog: Catalog, namespace: str, table: str, cols: list[types.Column]) -> Table:
    """Load the Iceberg table, creating it (partitioned by ``day(<time column>)``) or adding new production columns
    to its schema (existing columns never change type)."""
    from pyiceberg.exceptions import NoSuchTableError
    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.transforms import DayTransform

    schema = types.iceberg_schema(cols)
    ident = (namespace, table)
    try:
        tbl = catalog.load_table(ident)
    except NoSuchTableError:
        catalog.create_namespace_if_not_exists(namespace)
        spec = PartitionSpec()
        if tcol := types.time_column(table):
            source = schema.find_field(tcol).field_id
            spec = PartitionSpec(PartitionField(source, 1000, DayTransform(), f"{tcol}_day"))
        props = {"comment": types.TABLE_DOCS.get(table, table), **WRITE_PROPERTIES}
        return catalog.create_table(ident, schema, partition_spec=spec, properties=props)
    known = {f.name for f in tbl.schema().fields}
    if any(c.name not in known for c in cols):
        with tbl.update_schema() as update:
            update.union_by_name(schema)
        tbl = catalog.load_table(ident)
    return tbl


def _day_filter(tcol: str, day: date) -> BooleanExpression:
    from pyiceberg.expressions import And, GreaterThanOrEqual, LessThan

    start, end = (datetime.fromtimestamp(us / 1_000_000, UTC).isoformat() for us in day_bounds(day))
    return And(GreaterThanOrEqual(term=tcol, value=start), LessThan(term=tcol, value=end))


def _day_files(tbl: Table, table: str, day: date | None) -> list[Any]:
    """The data files the export of this day replaces: those of its partition (every file, for a state table)."""
    tcol = types.time_column(table)
    if tcol is None or day is None:
        return [task.file for task in tbl.scan().plan_files()]
    ordinal = (day - EPOCH_DAY).days
    tasks = tbl.scan(row_filter=_day_filter(tcol, day)).plan_files()
    return [task.file for task in tasks if task.file.partition[0] == ordinal]


def production_query(table: str, cols: list[types.Column], day: date | None) -> tuple[str, tuple]:
    sql = types.select_sql(table, cols)
    tcol = types.time_column(table)
    names = {c.name for c in cols}
    if tcol is None or day is None:
        key = "ticker" if "ticker" in names else ("event_ticker" if "event_ticker" in names else cols[0].name)
        return f"{sql} ORDER BY {key}", ()
    order = f"ticker, {tcol}" if "ticker" in names else tcol
    return f"{sql} WHERE {tcol} >= %s AND {tcol} < %s ORDER BY {order}", day_bounds(day)


def read_production(
    conn: psycopg.Connection, table: str, cols: list[types.Column], day: date | None, batch_rows: int
) -> Any:
    """Yield batches of production rows of the table-day inside the caller's transaction (server-side cursor)."""
    sql, params = production_query(table, cols, day)
    with conn.cursor(name=f"kalshictl_iceberg_{table}") as cur:
        cur.itersize = batch_rows
        cur.execute(sql, params)
        while rows := cur.fetchmany(batch_rows):
            yield rows


@dataclass
class IcebergExporter:
    """Production (an autocommit connection as the exporter role) -> the Iceberg tables of ``settings``."""

    settings: ExportSettings
    conn: psycopg.Connection
    catalog: Catalog
    on_rows: Callable[[int], None] | None = None
    before_commit: Callable[[str, date | None], None] | None = None  # tests kill the process here

    @classmethod
    def open(cls, settings: ExportSettings, *, warehouse: str | None = None) -> IcebergExporter:
        from kalshictl.db.connect import connect

        catalog = open_catalog(settings, warehouse=warehouse)
        return cls(settings, connect(settings.production, autocommit=True), catalog)

    def close(self) -> None:
        self.conn.close()
        engine = getattr(self.catalog, "engine", None)
        if engine is not None:
            engine.dispose()

    def __enter__(self) -> IcebergExporter:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _check(self, table: str, day: date | None) -> date | None:
        if table not in types.tables():
            raise ConfigError(f"--table: unknown table {table!r} (one of {', '.join(types.tables())})")
        if types.time_column(table) is None:
            return None
        if day is None:
            raise ConfigError(f"{table}: a day is required (it is partitioned by day)")
        return day

    def export_table_day(self, table: str, day: date | None) -> DayExport:
        """Replace ``table``'s ``day`` (or the whole state table) in one snapshot; see the module docs."""
        from pyiceberg.io.pyarrow import _dataframe_to_data_files

        day = self._check(table, day)
        cols = production_columns(self.conn, table)
        tbl = ensure_table(self.catalog, self.settings.iceberg.namespace, table, cols)
        commit_uuid, counter = uuid.uuid4(), itertools.count(0)
        files: list[Any] = []
        pending: list[tuple] = []  # rows of the next data file (at most rows_per_file, bounded memory)
        rows = total = 0

        def flush() -> None:
            if pending:
                df = types.to_iceberg_arrow(pending, cols)
                files.extend(_dataframe_to_data_files(tbl.metadata, df, tbl.io, commit_uuid, counter))
                pending.clear()

        with self.conn.transaction():
            self.conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            for batch in read_production(self.conn, table, cols, day, self.settings.batch_rows):
                total = _add_checksum(total, batch, cols)
                rows += len(batch)
                pending.extend(batch)
                if self.on_rows:
                    self.on_rows(len(batch))
                if len(pending) >= self.settings.rows_per_file:
                    flush()
            flush()
        checksum = f"{total:016x}"
        summary = {
            "kalshictl.table": table,
            "kalshictl.day": day.isoformat() if day else "all",
            "kalshictl.rows": str(rows),
            "kalshictl.checksum": checksum,
        }
        if self.before_commit:
            self.before_commit(table, day)
        tx = tbl.transaction()
        with tx.update_snapshot(snapshot_properties=summary).overwrite(commit_uuid) as overwrite:
            for old in _day_files(tbl, table, day):
                overwrite.delete_data_file(old)
            for new in files:
                overwrite.append_data_file(new)
        tx.commit_transaction()
        tbl = self.catalog.load_table((self.settings.iceberg.namespace, table))
        snapshot = tbl.current_snapshot()
        assert snapshot is not None
        return DayExport(table, day, rows, checksum, tbl.metadata_location, snapshot.snapshot_id)

    def verify_table_day(self, table: str, day: date | None, *, snapshot_id: int | None = None) -> DayVerification:
        """Count and checksum the day in production and in the Iceberg table (current or ``snapshot_id``)."""
        day = self._check(table, day)
        cols = production_columns(self.conn, table)
        total = rows = 0
        with self.conn.transaction():
            self.conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            for batch in read_production(self.conn, table, cols, day, self.settings.batch_rows):
                total = _add_checksum(total, batch, cols)
                rows += len(batch)
        tbl = self.catalog.load_table((self.settings.iceberg.namespace, table))
        tcol = types.time_column(table)
        scan_kwargs: dict[str, Any] = {"selected_fields": tuple(c.name for c in cols)}
        if tcol is not None and day is not None:
            scan_kwargs["row_filter"] = _day_filter(tcol, day)
        if snapshot_id is not None:
            scan_kwargs["snapshot_id"] = snapshot_id
        ice_rows = ice_total = 0
        for batch in tbl.scan(**scan_kwargs).to_arrow_batch_reader():  # bounded memory, batch by batch
            n, part = types.row_checksum(types.to_production_rows(batch, cols), cols)
            ice_rows, ice_total = ice_rows + n, (ice_total + int(part, 16)) & 0xFFFF_FFFF_FFFF_FFFF
        snap = snapshot_id if snapshot_id is not None else (s.snapshot_id if (s := tbl.current_snapshot()) else None)
        return DayVerification(table, day, rows, f"{total:016x}", ice_rows, f"{ice_total:016x}", snap)


def _add_checksum(total: int, rows: list[tuple], cols: list[types.Column]) -> int:
    """Fold rows into a running checksum (the sum mod 2⁶⁴ of row hashes)."""
    _count, part = types.row_checksum(rows, cols)
    return (total + int(part, 16)) & 0xFFFF_FFFF_FFFF_FFFF


def export_table_day(settings: ExportSettings, table: str, day: date | None) -> DayExport:
    """Export one table-day as one Iceberg snapshot (opens and closes its own connections)."""
    with IcebergExporter.open(settings) as exporter:
        return exporter.export_table_day(table, day)


def verify_table_day(
    settings: ExportSettings, table: str, day: date | None, *, snapshot_id: int | None = None
) -> DayVerification:
    """Compare one table-day in production and in its Iceberg table (count + checksum)."""
    with IcebergExporter.open(settings) as exporter:
        return exporter.verify_table_day(table, day, snapshot_id=snapshot_id)


def env_crash_hook() -> Callable[[str, date | None], None] | None:
    """``KALSHICTL_EXPORT_CRASH_BEFORE_COMMIT=TABLE`` kills the process after TABLE's data files are written, before
    its snapshot is committed (crash tests only)."""
    import os

    victim = os.environ.get("KALSHICTL_EXPORT_CRASH_BEFORE_COMMIT")
    if not victim:
        return None

    def hook(table: str, _day: date | None) -> None:
        if table == victim:
            os._exit(70)

    return hook
