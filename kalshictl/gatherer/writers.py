"""Batch writers: one per table (the deltas: a :class:`WriterGroup` of two, taking turns of one batch on two
connections), binary COPY into a temp staging table then ``INSERT … SELECT … ON CONFLICT DO NOTHING`` (tables without
duplicates: binary COPY straight in).

* A batch is flushed when it reaches ``batch_rows`` or when its oldest row is ``flush_ms`` old, whichever first.
* Deltas, trades, tickers and snapshots (where a duplicate key is rare) are COPYed straight into their keyed table;
  a batch that meets a duplicate is redone through staging, and the next batches too for a while.
* Rows are sent in PostgreSQL's binary COPY format, typed from the table's catalog on connect (no text rendering
  and parsing of every integer); ``uuid`` columns take the parser's canonical strings, ``jsonb`` columns take
  already-serialised JSON text (both through small binary dumpers registered on the writer's connection).
* The buffer is bounded in rows (``max_buffer_rows``) *and* in bytes (``max_buffer_bytes``: the rows' estimated
  memory, variable-size columns counted by their length, so a buffer of full order-book snapshots cannot grow to
  GiBs). While the database is down the writer keeps buffering within the bounds and retries with backoff; when
  it returns, everything buffered is written (duplicates from a retried commit
  are absorbed by ``ON CONFLICT``). Beyond the bound new rows are dropped *loudly*: counted, logged, ``full`` is set
  (health degrades), and the dropped time range is reported through ``on_overflow`` so it lands in ``sequence_gaps``.
* A row the database refuses (a data error) never poisons its batch: the batch is bisected, the bad row is counted
  and logged, the rest is written.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from kalshictl.backoff import Backoff
from kalshictl.gatherer.write_loop import Connect, WriteLoop
from kalshictl.schema import GathererWrite, Table
from kalshictl.units import now_us

DEFAULT_MAX_BUFFER_BYTES = 256 * 1024 * 1024  # per table
RETRY_FIRST_S = 0.05  # a failed write is retried after 0.05 s, 0.1 s, … up to ``retry_max_s`` (wall time)
DIRECT_COOLDOWN_BATCHES = 50  # batches written through staging after a direct COPY met a duplicate
ROW_OVERHEAD_BYTES = 64  # a row tuple's header; plus 8 per column (pointer) and each value's object below

if TYPE_CHECKING:
    import psycopg

    from kalshictl.gatherer.metrics import GathererMetrics

log = logging.getLogger("kalshictl.gatherer.writers")

OverflowFn = Callable[[str, int, int, int], None]
Row = tuple[Any, ...]  # a gatherer row in its table's ``gatherer_columns`` order (a catalogue NamedTuple or a tuple)


# Each table's facts (its row columns, clock, sized columns, how it is written and by how many writers) are in the
# catalogue, kalshictl/schema.py. Event tables: a duplicate key is rare (a batch re-written after an unknown commit
# outcome, a channel carried by two connections): COPY straight into the keyed table (about twice the rate of staging
# + INSERT ... ON CONFLICT); a batch that meets a duplicate is redone through staging, and the next
# DIRECT_COOLDOWN_BATCHES batches too, so a table that keeps seeing duplicates wastes one COPY in that many.


def fixed_row_bytes(spec: Table) -> int:
    """A row's estimated memory before its variable-size columns: tuple header + pointers + ~32 bytes per value
    object (ints, bools, and the str header of text values)."""
    return ROW_OVERHEAD_BYTES + 40 * len(spec.gatherer_columns)


def _is_outage(exc: BaseException) -> bool:
    import psycopg

    return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError | OSError | asyncio.TimeoutError)


class BatchWriter:
    """Buffers row tuples for one table and writes them in COPY batches on its own connection."""

    def __init__(
        self,
        spec: Table,
        connect: Connect,
        *,
        batch_rows: int = 5000,
        flush_ms: int = 200,
        max_buffer_rows: int = 2_000_000,
        max_buffer_bytes: int = DEFAULT_MAX_BUFFER_BYTES,
        metrics: GathererMetrics | None = None,
        on_overflow: OverflowFn | None = None,
        retry_max_s: float = 5.0,
        group: WriterGroup | None = None,
    ) -> None:
        self.spec = spec
        self.batch_rows = batch_rows
        self.flush_s = flush_ms / 1000.0
        self.max_buffer_rows = max_buffer_rows
        self.max_buffer_bytes = max_buffer_bytes
        self._fixed_bytes = fixed_row_bytes(spec)
        self._var = spec.sized_indexes
        self._var1 = self._var[0] if len(self._var) == 1 else None
        self._clock = spec.clock_index  # the row's receive time (µs): commit lag and overflow windows
        self._bytes = 0  # estimated bytes of the rows in _buf
        self._in_flight_bytes = 0
        self.metrics = metrics
        self.on_overflow = on_overflow
        self.group = group  # the writers of one table taking turns of one batch (None: alone)
        self._buf: list[Row] = []
        self._oldest: float | None = None  # monotonic time the oldest buffered row arrived
        self._in_flight = 0
        self._in_flight_from: int | None = None  # receive time (µs) of the oldest row being written
        # overflow accounting (pending report while the buffer stays full)
        self._ovf_rows = 0
        self._ovf_from = 0
        self._ovf_to = 0
        self.written = 0
        self.dropped = 0
        self.rejected = 0
        self.full = False
        self._loop: WriteLoop[list[Row]] = WriteLoop(
            spec.name, connect, self, Backoff(RETRY_FIRST_S, retry_max_s), setup=self._setup
        )
        cols = ", ".join(spec.gatherer_columns)
        self._stage = f"_stg_{spec.name}"
        self._create_stage = (
            f"CREATE TEMP TABLE IF NOT EXISTS {self._stage} ON COMMIT DELETE ROWS AS "
            f"SELECT {cols} FROM {spec.name} WITH NO DATA"
        )
        self._types: list[int] = []  # column type oids, read from the catalog on connect
        self._direct_sql = f"COPY {spec.name} ({cols}) FROM STDIN (FORMAT BINARY)"
        self._direct_cooldown = 0
        self._direct_first = spec.gatherer_write is GathererWrite.DIRECT_FIRST
        if spec.gatherer_write is not GathererWrite.APPEND:
            self._copy_sql = f"COPY {self._stage} ({cols}) FROM STDIN (FORMAT BINARY)"
            self._insert_sql = (
                f"INSERT INTO {spec.name} ({cols}) SELECT {cols} FROM {self._stage} ON CONFLICT DO NOTHING"
            )
        else:
            self._copy_sql = f"COPY {spec.name} ({cols}) FROM STDIN (FORMAT BINARY)"
            self._insert_sql = ""

    # ----- producer side --------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._buf) + self._in_flight

    @property
    def buffered_bytes(self) -> int:
        """Estimated memory of the rows buffered or being written."""
        return self._bytes + self._in_flight_bytes

    def row_bytes(self, row: Row) -> int:
        """Estimated memory of one row (its text columns by length)."""
        i = self._var1
        if i is not None:
            v = row[i]
            return self._fixed_bytes + (len(v) if v is not None else 0)
        return self._fixed_bytes + sum(len(row[i]) for i in self._var if row[i] is not None)

    def committed_through_us(self, now: int) -> int:
        """A time (µs) before which every row given to this writer is committed; ``now`` when nothing is pending."""
        through = now
        if self._in_flight_from is not None:
            through = min(through, self._in_flight_from)
        if self._buf:
            through = min(through, self._buf[0][self._clock] or now)
        return through

    def add(self, row: Row) -> bool:
        """Buffer one row; returns False (and accounts the loss loudly) when the buffer is full."""
        i = self._var1
        if i is not None:
            v = row[i]
            size = self._fixed_bytes + (len(v) if v is not None else 0)
        else:
            size = self.row_bytes(row)
        buf = self._buf
        n = len(buf)
        if (
            n + self._in_flight >= self.max_buffer_rows
            or self._bytes + self._in_flight_bytes + size > self.max_buffer_bytes
        ):
            if self.group is not None and self.group.spill(row, self):
                return True
            self._overflow(row)
            return False
        if not n:
            self._oldest = time.monotonic()
            self._loop.wake()
        buf.append(row)
        self._bytes += size
        if (n + 1) % self.batch_rows == 0:  # a full batch (or one more while the database is away)
            self._loop.wake()
            if self.group is not None:  # a full batch was buffered: the group turns to its next writer
                self.group.turn()
        return True

    def has_room(self, row: Row) -> bool:
        """Whether :meth:`add` would buffer ``row`` now (within both bounds)."""
        return (
            len(self._buf) + self._in_flight < self.max_buffer_rows
            and self._bytes + self._in_flight_bytes + self.row_bytes(row) <= self.max_buffer_bytes
        )

    def _overflow(self, row: Row) -> None:
        ts = row[self._clock] or 0
        if self._ovf_rows == 0:
            self._ovf_from = ts
            log.error(
                "%s: buffer full (%d rows, %.1f MiB; bounds %d rows, %.1f MiB): dropping new rows",
                self.spec.name,
                len(self),
                self.buffered_bytes / 2**20,
                self.max_buffer_rows,
                self.max_buffer_bytes / 2**20,
            )
        self._ovf_rows += 1
        self._ovf_to = max(self._ovf_to, ts)
        self.dropped += 1
        self.full = True
        if self.metrics is not None:
            self.metrics.overflow.labels(table=self.spec.name).inc()

    # ----- lifecycle (the queue-on-a-connection loop, kalshictl/gatherer/write_loop.py) -------------------------
    def start(self) -> None:
        """Start the flush loop."""
        self._loop.start()

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything buffered so far is committed; returns False on timeout."""
        return await self._loop.flush(timeout)

    async def stop(self, timeout: float = 10.0) -> bool:
        """Flush what is buffered (within ``timeout``), stop the loop and close the connection."""
        return await self._loop.stop(timeout)

    @property
    def connected(self) -> bool:
        return self._loop.connected

    @property
    def failures(self) -> int:
        return self._loop.failures

    @property
    def last_error(self) -> str | None:
        return self._loop.last_error

    # ----- the queue the loop drains --------------------------------------------------------------------------
    def due_in(self) -> float:
        """A batch is due when full or when its oldest row is ``flush_ms`` old."""
        if len(self._buf) >= self.batch_rows:
            return 0.0
        return self.flush_s - (time.monotonic() - (self._oldest or time.monotonic()))

    def take(self) -> list[Row] | None:
        if not self._buf:
            return None
        batch = self._buf[: self.batch_rows]
        del self._buf[: len(batch)]
        # the batch's share of the estimate (exact again whenever the buffer empties)
        moved = self._bytes * len(batch) // (len(batch) + len(self._buf)) if self._buf else self._bytes
        self._bytes -= moved
        self._in_flight_bytes = moved
        self._in_flight = len(batch)
        self._in_flight_from = batch[0][self._clock]
        self._oldest = time.monotonic() if self._buf else None
        return batch

    async def write(self, batch: list[Row]) -> None:
        await self._write_batch(batch)

    def committed(self, batch: list[Row]) -> None:
        self._in_flight = 0
        self._in_flight_bytes = 0
        self._in_flight_from = None
        self._report_overflow()
        if self.metrics is not None:
            depth = len(self._buf) if self.group is None else self.group.buffered_rows
            self.metrics.buffer_depth.labels(table=self.spec.name).set(depth)

    def give_back(self, batch: list[Row]) -> None:
        self._buf[:0] = batch
        self._bytes += self._in_flight_bytes
        self._in_flight = self._in_flight_bytes = 0
        self._in_flight_from = None
        self._oldest = time.monotonic()

    def failed(self, exc: Exception) -> None:
        if self.metrics is not None:
            self.metrics.write_errors.labels(table=self.spec.name).inc()

    def _report_overflow(self) -> None:
        if not self._buf:
            self._bytes = 0
        if len(self._buf) < self.max_buffer_rows * 0.9 and self._bytes < self.max_buffer_bytes * 0.9:
            self.full = False
            if self._ovf_rows:
                rows, lo, hi = self._ovf_rows, self._ovf_from, self._ovf_to
                self._ovf_rows = 0
                self._ovf_to = 0
                log.error("%s: dropped %d rows while the buffer was full", self.spec.name, rows)
                if self.on_overflow is not None:
                    self.on_overflow(self.spec.name, lo, hi, rows)

    async def _setup(self, conn: psycopg.AsyncConnection) -> None:
        """A new connection: binary dumpers, the staging table, the column types."""
        register_binary_dumpers(conn)
        async with conn.transaction():
            if self._insert_sql:
                await conn.execute(self._create_stage)
            self._types = await column_types(conn, self.spec.name, self.spec.gatherer_columns)

    async def _write_batch(self, batch: Sequence[Row]) -> None:
        import psycopg

        started = time.perf_counter()
        try:
            await self._copy(batch)
        except psycopg.Error as exc:
            if _is_outage(exc) or self._loop.broken:
                raise
            await self._bisect(batch)
        elapsed = time.perf_counter() - started
        self.written += len(batch)
        if self.metrics is not None:
            table = self.spec.name
            self.metrics.rows.labels(table=table).inc(len(batch))
            self.metrics.batch_latency.labels(table=table).observe(elapsed)
            oldest = min((r[self._clock] or 0) for r in batch)
            if oldest:
                self.metrics.commit_lag.labels(table=table).observe(max(0.0, (now_us() - oldest) / 1e6))

    async def _copy(self, batch: Sequence[Row]) -> None:
        conn = await self._loop.connection()
        if self._direct_first and self._direct_cooldown <= 0:
            import psycopg

            try:
                async with conn.transaction():
                    async with conn.cursor() as cur:
                        async with cur.copy(self._direct_sql) as copy:
                            copy.set_types(self._types)
                            write = copy.write_row
                            for row in batch:
                                await write(row)
                return
            except psycopg.errors.UniqueViolation:
                self._direct_cooldown = DIRECT_COOLDOWN_BATCHES  # duplicates around (a retried commit): stage
        self._direct_cooldown -= 1
        async with conn.transaction():
            async with conn.cursor() as cur:
                async with cur.copy(self._copy_sql) as copy:
                    copy.set_types(self._types)
                    write = copy.write_row
                    for row in batch:
                        await write(row)
                if self._insert_sql:
                    await cur.execute(self._insert_sql)

    async def _bisect(self, batch: Sequence[Row]) -> None:
        """Write a batch that contains a refused row: halves until the bad rows are isolated (and skipped)."""
        import psycopg

        if len(batch) == 1:
            try:
                await self._copy(batch)
            except psycopg.Error as exc:
                if _is_outage(exc):
                    raise
                self.rejected += 1
                if self.metrics is not None:
                    self.metrics.rejected.labels(table=self.spec.name).inc()
                log.error("%s: row refused by the database (%s): %r", self.spec.name, str(exc).strip()[:200], batch[0])
            return
        mid = len(batch) // 2
        for part in (batch[:mid], batch[mid:]):
            try:
                await self._copy(part)
            except psycopg.Error as exc:
                if _is_outage(exc):
                    raise
                await self._bisect(part)


class WriterGroup:
    """Several :class:`BatchWriter` of one table, each with its own buffer and connection, taking the rows in turns
    of one batch: while one writer's batch is in the database the next batch fills and goes out on the next
    connection. Each writer keeps every guarantee of its own (bounds, retries, bisection, staging after a
    duplicate, flush at shutdown); the group's bounds are the sum of its writers' (each holds an equal share), a
    row is buffered by exactly one writer, and the group's committed-through time is its writers' minimum.

    Rows of one market may commit out of order across writers; nothing depends on commit order but the
    committed-through time, which is taken over all writers.
    """

    def __init__(self, n: int, make: Callable[[WriterGroup], BatchWriter]) -> None:
        """``n`` writers, each made by ``make(group)`` (a :class:`BatchWriter` given this group)."""
        if n < 1:
            raise ValueError("a writer group needs at least one writer")
        self.parts = [make(self) for _ in range(n)]
        self.spec = self.parts[0].spec
        self._turn = 0
        self.add: Callable[[Row], bool] = self.parts[0].add  # the hot path calls the current writer directly

    def turn(self) -> None:
        """The current writer has a full batch: the next takes the rows."""
        self._turn = (self._turn + 1) % len(self.parts)
        self.add = self.parts[self._turn].add

    def spill(self, row: Row, full: BatchWriter) -> bool:
        """``full`` has no room for ``row``: the turn passes to the next writer that has (which buffers it); False
        when none has (``full`` then drops it, loudly)."""
        n = len(self.parts)
        for k in range(1, n):
            i = (self.parts.index(full) + k) % n
            p = self.parts[i]
            if p.has_room(row):
                self._turn = i
                self.add = p.add
                return p.add(row)
        return False

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts)

    @property
    def buffered_rows(self) -> int:
        """Rows buffered and not yet being written (the buffer-depth gauge)."""
        return sum(len(p._buf) for p in self.parts)

    @property
    def buffered_bytes(self) -> int:
        return sum(p.buffered_bytes for p in self.parts)

    def committed_through_us(self, now: int) -> int:
        return min(p.committed_through_us(now) for p in self.parts)

    def start(self) -> None:
        for p in self.parts:
            p.start()

    async def flush(self, timeout: float | None = None) -> bool:
        return all(await asyncio.gather(*(p.flush(timeout) for p in self.parts)))

    async def stop(self, timeout: float = 10.0) -> bool:
        return all(await asyncio.gather(*(p.stop(timeout) for p in self.parts)))

    @property
    def full(self) -> bool:
        return any(p.full for p in self.parts)

    @property
    def connected(self) -> bool:
        return all(p.connected for p in self.parts)

    @property
    def last_error(self) -> str | None:
        return next((p.last_error for p in self.parts if p.last_error is not None), None)

    @property
    def written(self) -> int:
        return sum(p.written for p in self.parts)

    @property
    def dropped(self) -> int:
        return sum(p.dropped for p in self.parts)

    @property
    def rejected(self) -> int:
        return sum(p.rejected for p in self.parts)

    @property
    def failures(self) -> int:
        return sum(p.failures for p in self.parts)


def make_writer(
    spec: Table,
    connect: Connect,
    *,
    max_buffer_rows: int = 2_000_000,
    max_buffer_bytes: int = DEFAULT_MAX_BUFFER_BYTES,
    cls: type[BatchWriter] = BatchWriter,
    **kw: Any,
) -> BatchWriter | WriterGroup:
    """The writer of a table: one :class:`BatchWriter`, or a :class:`WriterGroup` of ``spec.writers`` sharing the
    bounds equally."""
    n = spec.writers
    if n <= 1:
        return cls(spec, connect, max_buffer_rows=max_buffer_rows, max_buffer_bytes=max_buffer_bytes, **kw)
    return WriterGroup(
        n,
        lambda group: cls(
            spec,
            connect,
            max_buffer_rows=max_buffer_rows // n,
            max_buffer_bytes=max_buffer_bytes // n,
            group=group,
            **kw,
        ),
    )


async def column_types(conn: psycopg.AsyncConnection, table: str, columns: Sequence[str]) -> list[int]:
    """The type oids of ``columns`` of ``table`` (for a binary COPY)."""
    cur = await conn.execute(
        "SELECT attname, atttypid::int FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0"
        " AND NOT attisdropped",
        (table,),
    )
    types: dict[str, int] = dict(await cur.fetchall())
    missing = [c for c in columns if c not in types]
    if missing:
        raise RuntimeError(f"{table}: no column(s) {missing}")
    return [types[c] for c in columns]


class _UuidText:
    """Marker type: a ``uuid`` value given as its text (the dumper is looked up by the column's oid)."""


class _JsonText:
    """Marker type: a ``jsonb`` value given as serialised JSON text."""


def register_binary_dumpers(conn: Any) -> None:
    """Binary dumpers for values the router hands over as text: ``uuid`` from a UUID string (or a UUID) and
    ``jsonb`` from serialised JSON (a str; other objects are serialised with orjson)."""
    import orjson
    from psycopg.adapt import Dumper
    from psycopg.pq import Format

    types = conn.adapters.types

    class UuidBinary(Dumper):
        format = Format.BINARY
        oid = types["uuid"].oid

        def dump(self, obj: Any) -> bytes:
            if isinstance(obj, str):
                raw = bytes.fromhex(obj.replace("-", ""))
                if len(raw) != 16:
                    raise ValueError(f"not a UUID: {obj!r}")
                return raw
            packed: bytes = obj.bytes  # a uuid.UUID
            return packed

    class JsonbBinary(Dumper):
        format = Format.BINARY
        oid = types["jsonb"].oid

        def dump(self, obj: Any) -> bytes:
            return b"\x01" + (obj.encode() if isinstance(obj, str) else orjson.dumps(obj))

    conn.adapters.register_dumper(_UuidText, UuidBinary)
    conn.adapters.register_dumper(_JsonText, JsonbBinary)


TableWriter = BatchWriter | WriterGroup  # what a table's rows are given to


class WriterSet:
    """The table writers of one gatherer, keyed by table name (the gap log is apart: kalshictl/gatherer/gaps.py)."""

    def __init__(self, writers: Mapping[str, TableWriter]) -> None:
        self.by_table = dict(writers)

    def __getitem__(self, name: str) -> TableWriter:
        return self.by_table[name]

    def start(self) -> None:
        for w in self.by_table.values():
            w.start()

    async def flush_all(self, timeout: float | None = None) -> bool:
        """Flush every writer concurrently."""
        results = await asyncio.gather(*(w.flush(timeout) for w in self.by_table.values()))
        return all(results)

    async def stop(self, timeout: float = 10.0) -> bool:
        results = await asyncio.gather(*(w.stop(timeout) for w in self.by_table.values()))
        return all(results)

    @property
    def full(self) -> bool:
        return any(w.full for w in self.by_table.values())

    def depth(self) -> dict[str, int]:
        return {name: len(w) for name, w in self.by_table.items()}

    def committed_through_us(self, now: int) -> int:
        """A time (µs) before which everything received has been committed, over all tables."""
        return min((w.committed_through_us(now) for w in self.by_table.values()), default=now)

    def stats(self) -> dict[str, Any]:
        return {
            name: {
                "buffered": len(w),
                "buffered_bytes": w.buffered_bytes,
                "written": w.written,
                "dropped": w.dropped,
                "rejected": w.rejected,
                "failures": w.failures,
                "connected": w.connected,
                "last_error": w.last_error,
            }
            for name, w in self.by_table.items()
        }
