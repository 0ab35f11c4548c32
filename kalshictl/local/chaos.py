"""The fault suite's engine: run the pipeline as processes, inject faults at random moments, then prove that
production equals the exchange's ground truth (nothing missing, nothing duplicated, nothing invented).

Faults: SIGKILL a gatherer and restart it; stop and restart a gatherer's database; SIGKILL the deduplicator and
restart it; drop every WebSocket connection; an exchange-side outage (every connection of every gatherer, global
channels included, dropped and refused for seconds); markets created and paused markets re-activated while every
lifecycle channel is blind (learned afterwards from the re-anchor listing, which may name a market twice); a SIGKILL
of a gatherer while the resnapshots of a burst of sequence gaps are in flight; make REST answer 429 for a while; stop
production for a while — on top of the exchange's own frame faults (skipped seq, duplicate and malformed frames) and
listings that name markets twice. At most one gatherer is impaired at a time, so some
gatherer is always connected, except in an outage: there order-book deltas are lost by everyone (and must lie in a
recorded window of every gatherer) while trades come back through the gatherers' REST backfill. Before comparing, the
run waits until no gap window is still waiting for its backfill.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from kalshictl.db.rows import one_row
from kalshictl.local.demo import Demo, DemoOptions
from kalshictl.local.verify import TableReport, compare

FRAME_FAULTS = "skip_seq=0.002,dup=0.002,malformed=0.001,list_dup=0.2"


@dataclass
class ChaosOptions:
    """Shape of a chaos run."""

    duration_s: float = 240.0
    min_faults: int = 20
    seed: int = 11
    markets: int = 120
    rate: float = 250.0
    workdir: Path | None = None
    frame_faults: str = FRAME_FAULTS
    exchange_variant: dict[str, str] = field(default_factory=dict)  # `kalshictl sim` flags, e.g. {"ack-seq": "last"}
    kinds: tuple[str, ...] = (
        "kill_gatherer",
        "stop_gatherer_db",
        "kill_dedup",
        "drop_ws",
        "rest_429",
        "stop_production",
        "outage",
        "kill_during_resnapshot",
        "blind_lifecycle",
    )


@dataclass
class ChaosResult:
    """What was injected and how production compared with the ground truth."""

    faults: list[dict[str, Any]] = field(default_factory=list)
    tables: list[TableReport] = field(default_factory=list)
    books: dict[str, Any] | None = None  # every market's rebuilt book against the exchange's (Demo.check_all_books)

    @property
    def books_differing(self) -> int:
        return len((self.books or {}).get("mismatched") or [])

    @property
    def ok(self) -> bool:
        return all(t.ok for t in self.tables) and self.books_differing == 0

    def totals(self) -> dict[str, int]:
        keys = ("emitted", "stored", "recovered", "lost_recorded", "lost_unrecorded", "duplicated", "extra")
        totals = {k: sum(getattr(t, k) for t in self.tables) for k in keys}
        totals["missing"], totals["excused"] = totals["lost_unrecorded"], totals["lost_recorded"]
        return totals | {"faults_injected": len(self.faults), "books_differing": self.books_differing}

    def table(self) -> str:
        """The per-table report with its verdict line, and the books compared."""
        from kalshictl.local.verify import render_table

        books = self.books or {}
        checked, differing = books.get("checked", 0), self.books_differing
        line = f"books: {checked} rebuilt from production, {differing} differ from the exchange's"
        return render_table(self.tables) + "\n" + line


class Chaos:
    """Drive a :class:`Demo` pipeline (one PostgreSQL cluster per service) through random faults."""

    def __init__(self, options: ChaosOptions, log: Callable[[str], None] = print) -> None:
        self.options = options
        self.rng = random.Random(options.seed)
        self.log = log
        self.demo = Demo(
            DemoOptions(
                markets=options.markets,
                seed=options.seed,
                rate=options.rate,
                faults=options.frame_faults,
                workdir=options.workdir,
                keep=options.workdir is not None,
                separate_clusters=True,
                snapshot_interval_s=20.0,
                exchange_variant=options.exchange_variant,
            )
        )
        self.demo.check_every_book = True  # books compared at the end, not only rows
        self.http = httpx.Client(timeout=5.0)
        self.before_stop: Callable[[], None] | None = None  # a hook for tests (runs with every service still up)
        self.sim = f"http://127.0.0.1:{self.demo.sim_port}/_sim"

    # -- faults ---------------------------------------------------------------------------------------------------
    def _gatherer(self) -> tuple[int, str]:
        i = self.rng.randrange(self.demo.pipeline.config.gatherers)
        return i, self.demo.pipeline.gatherer_name(i)

    def inject(self, kind: str) -> dict[str, Any]:
        """Inject one fault and undo it (restart/recover) before returning."""
        sup = self.demo.supervisor
        pipe = self.demo.pipeline
        pause = self.rng.uniform(1.0, 4.0)
        record: dict[str, Any] = {"kind": kind, "at": round(time.monotonic() - self.demo.started_at, 1)}
        if kind == "kill_gatherer":
            i, name = self._gatherer()
            sup[name].kill()
            time.sleep(pause)
            sup[name].start()
            record["target"] = name
            self.demo.wait_healthy(f"http://127.0.0.1:{pipe.http_ports()[i]}/health", name)
        elif kind == "stop_gatherer_db":
            i, name = self._gatherer()
            pipe.gatherer_clusters[i].stop("fast")
            time.sleep(pause)
            pipe.gatherer_clusters[i].start()
            record["target"] = name
            self.demo.wait_healthy(f"http://127.0.0.1:{pipe.http_ports()[i]}/health", name, timeout=120)
        elif kind == "kill_dedup":
            sup["deduplicator"].kill()
            time.sleep(pause)
            sup["deduplicator"].start()
        elif kind == "drop_ws":
            self.http.post(f"{self.sim}/drop").raise_for_status()
        elif kind == "rest_429":
            self.http.post(f"{self.sim}/faults", content=f"{self.options.frame_faults},rest_429=0.6")
            time.sleep(pause)
            self.http.post(f"{self.sim}/faults", content=self.options.frame_faults)
        elif kind == "outage":  # every gatherer blind at once, global channels included
            self.http.post(f"{self.sim}/refuse", params={"seconds": f"{pause:.2f}"}).raise_for_status()
            self.http.post(f"{self.sim}/drop").raise_for_status()
            time.sleep(pause)
        elif kind == "blind_lifecycle":  # markets created and re-activated while every lifecycle channel is blind
            self.http.post(f"{self.sim}/lifecycle", params={"deactivate": "2"}).raise_for_status()  # seen paused
            time.sleep(0.5)
            self.http.post(f"{self.sim}/refuse", params={"seconds": f"{pause:.2f}"}).raise_for_status()
            self.http.post(f"{self.sim}/drop").raise_for_status()
            made = self.http.post(f"{self.sim}/lifecycle", params={"create": "2", "activate": "2"})
            made.raise_for_status()
            record["created"], record["activated"] = made.json()["created"], made.json()["activated"]
            time.sleep(pause)
        elif kind == "kill_during_resnapshot":
            i, name = self._gatherer()
            # a burst of skipped seqs: every gatherer's subscriptions keep asking for snapshots ...
            self.http.post(f"{self.sim}/faults", content=f"{self.options.frame_faults},skip_seq=0.5")
            time.sleep(self.rng.uniform(0.05, 0.2))
            record["resyncing_at_kill"] = self._wait_resyncing(pipe.http_ports()[i])
            sup[name].kill()  # ... and this one dies while its resnapshots are in flight
            self.http.post(f"{self.sim}/faults", content=self.options.frame_faults)
            time.sleep(pause)
            sup[name].start()
            record["target"] = name
            self.demo.wait_healthy(f"http://127.0.0.1:{pipe.http_ports()[i]}/health", name)
        elif kind == "stop_production":
            pipe.production_cluster.stop("fast")
            time.sleep(pause)
            pipe.production_cluster.start()
        else:
            raise ValueError(f"unknown fault {kind!r}")
        record["held_s"] = round(pause, 1)
        self.log(f"fault #{len(self.result.faults) + 1}: {record}")
        return record

    def _wait_resyncing(self, port: int, timeout: float = 3.0) -> int:
        """Poll a gatherer's /status until it reports markets awaiting a resnapshot; returns how many (0 = never)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                n = int(
                    self.http.get(f"http://127.0.0.1:{port}/status", timeout=1.0).json().get("resyncing_markets", 0)
                )
            except (httpx.HTTPError, ValueError, TypeError):
                n = 0
            if n:
                return n
            time.sleep(0.01)
        return 0

    def wait_recoveries(self, timeout: float = 90.0) -> int:
        """Wait (bounded) until no gatherer has a gap window whose REST backfill is still pending; returns how many
        are still pending at the end."""
        import psycopg

        pipe = self.demo.pipeline
        deadline = time.monotonic() + timeout
        pending = 0
        while True:
            pending = 0
            for i in range(pipe.config.gatherers):
                try:
                    with psycopg.connect(pipe.gatherer_admin_dsn(i), connect_timeout=3) as conn:
                        pending += one_row(
                            conn.execute(
                                "SELECT count(*) FROM sequence_gaps WHERE recovery = 'pending' OR"
                                " (to_ts IS NULL AND channel IN ('trade', '*'))"
                            )
                        )[0]
                except psycopg.Error:
                    pending += 1
            if pending == 0 or time.monotonic() > deadline:
                if pending:
                    self.log(f"{pending} gap window(s) still waiting for recovery after {timeout:.0f}s")
                return pending
            time.sleep(0.5)

    # -- run ------------------------------------------------------------------------------------------------------
    def run(self) -> ChaosResult:
        """Set up, run with faults for ``duration_s`` (at least ``min_faults``), stop gracefully, compare."""
        self.result = ChaosResult()
        opts = self.options
        try:
            self.demo.setup()
            self.demo.start()
            deadline = time.monotonic() + opts.duration_s
            kinds = list(opts.kinds)
            while time.monotonic() < deadline or len(self.result.faults) < opts.min_faults:
                gap = max(0.5, (deadline - time.monotonic()) / max(1, opts.min_faults - len(self.result.faults)))
                time.sleep(self.rng.uniform(0.3, min(gap, 6.0)))
                # every kind at least once, then random
                kind = kinds.pop(0) if kinds else self.rng.choice(opts.kinds)
                self.result.faults.append(self.inject(kind))
            time.sleep(3.0)  # let the last recovery settle before stopping
            self.wait_recoveries()
            if self.before_stop is not None:
                self.before_stop()
            self.demo.stop()
            self.result.books = self.demo.books_check
            pipe = self.demo.pipeline
            self.result.tables = compare(
                pipe.production_dsn(),
                self.demo.ground_truth,
                [pipe.gatherer_name(i) for i in range(pipe.config.gatherers)],
            )
            return self.result
        finally:
            self.http.close()
            self.demo.close()
