"""Compare production with the exchange's ground-truth log: nothing missing, nothing duplicated, nothing invented.

Keys are the exchange facts production merges on (docs/deduplicator.md). An emitted event may be missing from production
only when *every* gatherer recorded a gap window (``sequence_gaps``) covering its channel, market and time — events
emitted while at least one gatherer was connected must be stored exactly once. Per table the report counts:

* ``emitted`` (ground truth), ``stored`` (production rows), ``recovered`` (trades: stored rows that came from a REST
  backfill, ``source = 'rest'``; tickers: REST re-anchor snapshot rows, which are observations and are not compared),
* ``lost_recorded``: missing, and every gatherer recorded a window that lost it (a trade window marked
  ``recovered`` does not count: the backfill should have brought the trade back),
* ``lost_unrecorded``: missing with no such record — must be 0,
* ``duplicated`` (more copies than emitted) and ``extra`` (never emitted) — must be 0.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from kalshictl.schema import EVENT_TABLES, REST_ANCHOR_SPACING_US

KIND_TABLE = {"trade": "trades", "delta": "orderbook_deltas", "ticker": "tickers", "lifecycle": "lifecycle_events"}
# the WebSocket channel whose gap windows excuse a table's losses ('*' windows excuse every channel)
TABLE_CHANNELS = {
    "trades": ("trade",),
    "orderbook_deltas": ("orderbook_delta",),
    "tickers": ("ticker",),
    "lifecycle_events": ("market_lifecycle_v2", "multivariate_market_lifecycle"),
}
RECOVERABLE = frozenset(("trades",))
# tables whose 'rest' rows are re-anchor snapshots (counted as recovered, not compared with the event stream)
OBSERVATIONS = frozenset(("tickers",))
# two REST listings of one gatherer are at least a round trip apart: rows of one gatherer whose times differ by less
# are not listing times (the old made-up ``now + n`` microseconds)
LISTING_APART_US = 1_000


# A trade is identified by its trade_id alone (docs/deduplicator.md): a REST-backfilled copy's created_time may be
# coarser than the WebSocket's ts_ms, and production stores each trade_id once whatever its time.
IDENTITY = {**{t.name: t.key for t in EVENT_TABLES}, "trades": ("trade_id",)}


def truth_key(table: str, rec: dict[str, Any]) -> tuple:
    """A ground-truth record's identity (production's key, kalshictl/schema.py, in its order; trades: trade_id)."""
    return tuple(_truth_value(rec, col) for col in IDENTITY[table])


def _truth_value(rec: dict[str, Any], column: str) -> Any:
    if column == "side":
        return rec["side"] == "yes"
    if column == "trade_id":
        return str(rec["trade_id"])
    if column == "occurrence":
        return int(rec.get("occurrence", 0))
    if column == "source":
        return "ws"  # the ground truth holds what the exchange emitted on its streams
    return rec[column]


def _key_query(table: str) -> str:
    """Production's key columns of ``table`` followed by its exchange time."""
    cols = ", ".join("trade_id::text" if c == "trade_id" else c for c in IDENTITY[table])
    return f"SELECT {cols}, exchange_ts FROM {table}"


@dataclass
class TableReport:
    """Comparison of one table."""

    table: str
    emitted: int = 0
    stored: int = 0
    recovered: int = 0
    lost_recorded: int = 0
    lost_unrecorded: int = 0
    duplicated: int = 0
    extra: int = 0
    examples: list[Any] = field(default_factory=list)

    # the older names
    @property
    def missing(self) -> int:
        return self.lost_unrecorded

    @property
    def excused(self) -> int:
        return self.lost_recorded

    @property
    def ok(self) -> bool:
        return self.lost_unrecorded == 0 and self.duplicated == 0 and self.extra == 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "emitted": self.emitted,
            "stored": self.stored,
            "recovered": self.recovered,
            "lost_recorded": self.lost_recorded,
            "lost_unrecorded": self.lost_unrecorded,
            "duplicated": self.duplicated,
            "extra": self.extra,
            "missing": self.missing,
            "excused": self.excused,
            "ok": self.ok,
            "examples": self.examples[:5],
        }


REPORT_COLUMNS = ("emitted", "stored", "recovered", "lost_recorded", "lost_unrecorded", "duplicated", "extra")


def render_table(reports: Iterable[TableReport]) -> str:
    """The per-table report as a fixed-width text table with one verdict line."""
    reports = list(reports)
    head = ["table", *REPORT_COLUMNS]
    rows = [[r.table, *(str(getattr(r, c)) for c in REPORT_COLUMNS)] for r in reports]
    total = ["TOTAL", *(str(sum(getattr(r, c) for r in reports)) for c in REPORT_COLUMNS)]
    widths = [max(len(x) for x in col) for col in zip(head, *rows, total, strict=True)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    sep = "  ".join("-" * w for w in widths)
    out = [line(head), sep, *(line(r) for r in rows), sep, line(total)]
    ok = all(r.ok for r in reports)
    unrec = sum(r.lost_unrecorded for r in reports)
    dup = sum(r.duplicated + r.extra for r in reports)
    verdict = "PASS" if ok else "FAIL"
    out.append(f"VERDICT: {verdict} ({unrec} lost without a record, {dup} duplicated or invented)")
    return "\n".join(out)


GAP_QUERY = "SELECT gatherer, channel, tickers, from_ts, to_ts, recovery FROM sequence_gaps"


class GapIndex:
    """Per-gatherer gap windows; ``all_blind(table, ticker, ts)`` is true when every gatherer recorded a window that
    lost that table's data of ``ticker`` at ``ts``."""

    def __init__(
        self,
        gatherers: Iterable[str],
        rows: Iterable[tuple[str, str, Iterable[str] | None, int, int | None, str]],
    ) -> None:
        self.gatherers = sorted(set(gatherers))
        self.windows: dict[str, list[tuple[str, frozenset[str] | None, int, float, str]]] = {
            g: [] for g in self.gatherers
        }
        for gatherer, channel, tickers, from_ts, to_ts, recovery in rows:
            self.windows.setdefault(gatherer, []).append(
                (
                    channel,
                    None if tickers is None else frozenset(tickers),
                    from_ts,
                    math.inf if to_ts is None else to_ts,
                    recovery,
                )
            )

    def blind(self, gatherer: str, table: str, ticker: str, ts: int) -> bool:
        channels = TABLE_CHANNELS[table]
        for ch, tickers, lo, hi, recovery in self.windows.get(gatherer, ()):
            if not (lo <= ts <= hi) or (ch != "*" and ch not in channels):
                continue
            if tickers is not None and ticker not in tickers:
                continue
            if table in RECOVERABLE and recovery == "recovered":
                continue  # the backfill claims it brought these back
            return True
        return False

    def all_blind(self, table: str, ticker: str, ts: int) -> bool:
        return bool(self.gatherers) and all(self.blind(g, table, ticker, ts) for g in self.gatherers)


def _has_source(conn: Any, table: str) -> bool:
    return bool(
        conn.execute(
            "SELECT 1 FROM information_schema.columns WHERE table_name = %s AND column_name = 'source'", (table,)
        ).fetchone()
    )


def _count_rest(conn: Any, table: str, until_us: int | None) -> int:
    """Stored rows a REST backfill brought back, or REST re-anchor snapshots (0 on a schema without ``source``)."""
    if not _has_source(conn, table):
        return 0
    q = f"SELECT count(*) FROM {table} WHERE source = 'rest'"
    return conn.execute(
        q + (" AND exchange_ts <= %s" if until_us is not None else ""), (until_us,) if until_us is not None else ()
    ).fetchone()[0]


def load_truth(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Ground-truth records grouped by production table."""
    out: dict[str, list[dict[str, Any]]] = {t: [] for t in KIND_TABLE.values()}
    with open(path, "rb") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            rec = orjson.loads(line)
            table = KIND_TABLE.get(rec.get("kind"))
            if table:
                out[table].append(rec)
    return out


def compare(
    production_dsn: str,
    truth_path: Path,
    gatherers: Iterable[str],
    *,
    password: str | None = None,
    until_us: int | None = None,
) -> list[TableReport]:
    """Compare production with the ground truth; events after ``until_us`` are ignored on both sides."""
    import psycopg

    truth = load_truth(truth_path)
    reports = []
    with psycopg.connect(production_dsn, password=password) as conn:
        gaps = GapIndex(gatherers, conn.execute(GAP_QUERY).fetchall())
        # A market's deltas before the first order-book snapshot any gatherer took are inside that snapshot
        # (subscribing to a market, e.g. one created mid-run, starts with a snapshot, as on Kalshi).
        first_snapshot: dict[str, int] = dict(
            conn.execute(
                "SELECT ticker, min(snapshot_ts) FROM orderbook_snapshots WHERE source = 'ws' GROUP BY ticker"
            ).fetchall()
        )
        for table in KIND_TABLE.values():
            if table == "lifecycle_events":
                reports.append(_compare_lifecycle(conn, truth[table], gaps, until_us))
                continue
            rep = TableReport(table)
            expected: Counter[tuple[Any, ...]] = Counter()
            ts_of: dict[tuple, tuple[str, int]] = {}
            for rec in truth[table]:
                if until_us is not None and int(rec["exchange_ts"]) > until_us:
                    continue
                key = truth_key(table, rec)
                expected[key] += 1
                ts_of[key] = (rec["ticker"], int(rec["exchange_ts"]))
            stored: Counter[tuple[Any, ...]] = Counter()
            query = _key_query(table)
            if table in OBSERVATIONS and _has_source(conn, table):
                query += " WHERE source = 'ws'"  # REST re-anchors are observations, not exchange events
            for row in conn.execute(query).fetchall():
                key, ts = tuple(row[:-1]), row[-1]
                if until_us is not None and ts > until_us:
                    continue
                stored[key] += 1
            rep.emitted = sum(expected.values())
            rep.stored = sum(stored.values())
            if table in RECOVERABLE or table in OBSERVATIONS:
                rep.recovered = _count_rest(conn, table, until_us)
            for key, n in expected.items():
                have = stored.get(key, 0)
                if have < n:
                    ticker, ts = ts_of[key]
                    before_snapshot = table == "orderbook_deltas" and ts < first_snapshot.get(ticker, -1)
                    if before_snapshot or gaps.all_blind(table, ticker, ts):
                        rep.lost_recorded += n - have
                    else:
                        rep.lost_unrecorded += n - have
                        rep.examples.append({"missing": list(key)})
                elif have > n:
                    rep.duplicated += have - n
            for key, have in stored.items():
                if key not in expected:
                    rep.extra += have
                    rep.examples.append({"extra": list(key)})
            if table in OBSERVATIONS and _has_source(conn, table):
                check_rest_anchors(conn, rep, until_us)
            reports.append(rep)
    return reports


def check_rest_anchors(conn: Any, rep: TableReport, until_us: int | None = None) -> None:
    """REST re-anchor rows (``source = 'rest'``) are what they say: at most one per market per
    ``REST_ANCHOR_SPACING_US`` (a crowded one counts as duplicated), and stamped with the time their listing was
    received — ``exchange_ts = received_at``, shared by the rows of one listing, so two listing times of one gatherer
    are never a made-up microsecond or a few apart (such a row counts as extra, i.e. invented)."""
    span = REST_ANCHOR_SPACING_US
    upto = "" if until_us is None else f" AND exchange_ts <= {int(until_us)}"
    crowded = conn.execute(
        f"SELECT ticker, exchange_ts, gatherer FROM (SELECT ticker, exchange_ts, gatherer, lag(exchange_ts) OVER"
        f" (PARTITION BY ticker ORDER BY exchange_ts) AS prev FROM {rep.table} WHERE source = 'rest'{upto}) r"
        f" WHERE exchange_ts - prev < {span}"
    ).fetchall()
    t = rep.table
    fabricated = conn.execute(
        f"WITH times AS (SELECT DISTINCT gatherer, exchange_ts FROM {t} WHERE source = 'rest'{upto}),"
        " apart AS (SELECT gatherer, exchange_ts, exchange_ts - lag(exchange_ts) OVER"
        " (PARTITION BY gatherer ORDER BY exchange_ts) AS d FROM times)"
        f" SELECT r.ticker, r.exchange_ts, r.gatherer FROM {t} r JOIN apart a USING (gatherer, exchange_ts)"
        f" WHERE r.source = 'rest' AND (a.d < {LISTING_APART_US} OR r.exchange_ts <> r.received_at)"
    ).fetchall()
    rep.duplicated += len(crowded)
    rep.extra += len(fabricated)
    rep.examples.extend({"crowded_rest_row": list(r)} for r in crowded[:5])
    rep.examples.extend({"fabricated_rest_time": list(r)} for r in fabricated[:5])


LIFECYCLE_MATCH_US = 60_000_000  # the longest receive delay a stored lifecycle row may have after its event
# how much earlier than the event a row may be stamped: a receive time only by clock granularity, a message's own
# time (e.g. ``determination_ts``, whole seconds) by its resolution
LIFECYCLE_EARLY_US = {"received": 50_000, "own": 1_000_000}


def _compare_lifecycle(conn: Any, records: list[dict[str, Any]], gaps: GapIndex, until_us: int | None) -> TableReport:
    """Lifecycle rows are stamped with the gatherer's receive time when the message has no time of its own, and Kalshi
    repeats identical messages, so a stored row is paired with the **latest** emitted event of the same (ticker,
    event_type, digest) at or before it (within the receive delay) that no later row took: rows are paired in
    descending time. (Pairing each event with the nearest row after it would hand a repeat's row to an earlier event
    every gatherer missed, and report the repeat as lost.) Events left over are missing, rows left over duplicates
    (near an event) or invented."""
    from kalshictl.kalshi.lifecycle_key import digest

    rep = TableReport("lifecycle_events")
    # with the payload recorded (the local exchange does), events are told apart by their content digest too
    by_digest = bool(records) and all("payload" in rec for rec in records)
    want: dict[tuple, list[int]] = {}
    for rec in records:
        ts = int(rec["exchange_ts"])
        if until_us is None or ts <= until_us:
            key: tuple[Any, ...] = (rec["ticker"], rec["event_type"])
            if by_digest:
                key += (digest(rec["event_type"], rec["ticker"], rec["payload"]),)
            want.setdefault(key, []).append(ts)
    have: dict[tuple, list[tuple[int, int]]] = {}  # key -> [(exchange_ts, how early it may be)]
    cols = "ticker, event_type, exchange_ts, exchange_ts = received_at" + (", digest" if by_digest else "")
    for row in conn.execute(f"SELECT {cols} FROM lifecycle_events"):
        key = (row[0], row[1], bytes(row[4])) if by_digest else (row[0], row[1])
        have.setdefault(key, []).append((row[2], LIFECYCLE_EARLY_US["received" if row[3] else "own"]))
    rep.emitted = sum(len(v) for v in want.values())
    rep.stored = sum(len(v) for v in have.values())
    for key in sorted(set(want) | set(have)):
        emitted, stored = sorted(want.get(key, [])), sorted(have.get(key, []))
        taken = [False] * len(emitted)
        leftover = []
        for st, early in reversed(stored):
            j = next(
                (
                    i
                    for i in range(len(emitted) - 1, -1, -1)
                    if not taken[i] and emitted[i] - early <= st <= emitted[i] + LIFECYCLE_MATCH_US
                ),
                None,
            )
            if j is None:
                leftover.append((st, early))
            else:
                taken[j] = True
        for i, ts in enumerate(emitted):
            if taken[i]:
                continue
            if gaps.all_blind("lifecycle_events", key[0], ts):
                rep.lost_recorded += 1
            else:
                rep.lost_unrecorded += 1
                rep.examples.append({"missing": [*key[:2], ts]})
        for st, _ in leftover:
            if until_us is not None and st > until_us + LIFECYCLE_MATCH_US:
                continue
            if any(abs(st - ts) <= LIFECYCLE_MATCH_US for ts in emitted):
                rep.duplicated += 1
            else:
                rep.extra += 1
            rep.examples.append({"unmatched": [*key[:2], st]})
    return rep
