"""The newcomer's first command: a whole pipeline on this machine, with no configuration.

Starts an embedded PostgreSQL, the local exchange, three gatherers and the deduplicator as real processes (the same
commands systemd runs), samples their health and progress for a live view, then stops them in the order of
docs/runbooks/startup.md (gatherers flush on SIGTERM, the deduplicator drains, the exchange writes its ground truth)
and summarises what production holds against what the exchange emitted.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg

from kalshictl.config import load_settings
from kalshictl.db.embedded import free_port
from kalshictl.db.rows import one_row
from kalshictl.errors import KalshiCtlError, summarize
from kalshictl.local.pipeline import LocalPipeline, LocalPipelineConfig
from kalshictl.local.processes import Supervisor, kalshictl_argv
from kalshictl.local.verify import KIND_TABLE, compare, load_truth
from kalshictl.research.book_query import book_at
from kalshictl.schema import MARKET_DATA_TABLES
from kalshictl.units import now_us

log = logging.getLogger("kalshictl.local.demo")

# tables whose every row is one exchange event the exchange's ground truth counts, then the snapshots (the gatherers'
# REST polls: how many production holds depends on the poll interval, not on the exchange)
TRUTH_TABLES = tuple(KIND_TABLE.values())
EVENT_TABLES = (*TRUTH_TABLES, *(t.name for t in MARKET_DATA_TABLES if t.name not in TRUTH_TABLES))


@dataclass
class DemoOptions:
    """What the demo runs."""

    markets: int = 300
    seed: int = 7
    rate: float = 300.0
    faults: str | None = None
    workdir: Path | None = None
    keep: bool = False
    orderbook_connections: int = 4
    separate_clusters: bool = False  # one PostgreSQL cluster per gatherer + one for production (fault tests)
    snapshot_interval_s: float = 30.0
    # readings of the exchange the docs leave open (`kalshictl sim` flags): e.g. {"ack-seq": "last"}
    exchange_variant: dict[str, str] = field(default_factory=dict)


@dataclass
class DemoState:
    """One sample of the running pipeline for the live view."""

    elapsed_s: float
    exchange: dict[str, Any] = field(default_factory=dict)
    services: list[dict[str, Any]] = field(default_factory=list)
    production: dict[str, int] = field(default_factory=dict)
    max_lag_s: float | None = None


class Demo:
    """Set up, run, sample and stop the local pipeline."""

    def __init__(self, options: DemoOptions) -> None:
        self.options = options
        base = options.workdir or Path(tempfile.mkdtemp(prefix="kalshictl-demo-"))
        self.base_dir = Path(base)
        self.sim_port = free_port()
        self.rest_url = f"http://127.0.0.1:{self.sim_port}/trade-api/v2"
        self.ws_url = f"ws://127.0.0.1:{self.sim_port}/trade-api/ws/v2"
        self.ground_truth = self.base_dir / "ground-truth.jsonl"
        self.pipeline = LocalPipeline(
            LocalPipelineConfig(
                base_dir=self.base_dir,
                rest_url=self.rest_url,
                ws_url=self.ws_url,
                orderbook_connections=options.orderbook_connections,
                requests_per_second=50.0,
                separate_clusters=options.separate_clusters,
                snapshot_interval_s=options.snapshot_interval_s,
            )
        )
        self.supervisor = Supervisor(self.base_dir / "logs")
        self.started_at = 0.0
        self._http = httpx.Client(timeout=2.0)
        self._rates: dict[str, tuple[float, float]] = {}

    # -- lifecycle ----------------------------------------------------------------------------------------------
    def setup(self) -> None:
        """Embedded PostgreSQL, roles, schemas, config files."""
        self.pipeline.setup()

    def start(self) -> None:
        """Start the exchange (paused), the gatherers, then the deduplicator (docs/runbooks/startup.md); once every
        gatherer is healthy — registry loaded, every market subscribed — let the exchange trade."""
        opts = self.options
        argv = ["sim", "--markets", str(opts.markets), "--seed", str(opts.seed), "--host", "127.0.0.1",
                "--port", str(self.sim_port), "--rate", str(opts.rate), "--ground-truth", str(self.ground_truth),
                "--rest-tier", "unlimited", "--paused"]  # fmt: skip
        if opts.faults:
            argv += ["--faults", opts.faults]
        for flag, value in opts.exchange_variant.items():
            argv += [f"--{flag}", value]
        self.supervisor.add("exchange", kalshictl_argv(*argv)).start()
        self._wait_answering(f"{self.rest_url}/exchange/status", "exchange")
        for i in range(self.pipeline.config.gatherers):
            name = self.pipeline.gatherer_name(i)
            config = str(self.pipeline.config_paths[name])
            self.supervisor.add(name, kalshictl_argv("gather", "run", "--config", config)).start()
        config = str(self.pipeline.config_paths["deduplicator"])
        self.supervisor.add("deduplicator", kalshictl_argv("dedup", "run", "--config", config)).start()
        ports = self.pipeline.http_ports()
        for i in range(self.pipeline.config.gatherers):
            self.wait_healthy(f"http://127.0.0.1:{ports[i]}/health", self.pipeline.gatherer_name(i))
        self.wait_healthy(f"http://127.0.0.1:{ports[-1]}/health", "deduplicator", accept_degraded=True)
        self._http.post(f"http://127.0.0.1:{self.sim_port}/_sim/resume").raise_for_status()
        self.started_at = time.monotonic()

    def wait_healthy(self, url: str, name: str, timeout: float = 120.0, accept_degraded: bool = False) -> None:
        """Poll a /health URL until it reports healthy (or degraded when accepted); fail fast if the process died."""
        wanted = {"healthy", "degraded"} if accept_degraded else {"healthy"}

        def ready(_code: int | None, body: Any) -> bool:
            return isinstance(body, dict) and body.get("status") in wanted

        self._wait_for(url, name, ready, timeout, "healthy")

    def _wait_answering(self, url: str, name: str, timeout: float = 60.0) -> None:
        """Poll until ``url`` answers below HTTP 500."""
        self._wait_for(url, name, lambda code, _body: code is not None and code < 500, timeout, "answering")

    def _wait_for(self, url: str, name: str, ready: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            proc = self.supervisor.processes.get(name)
            if proc is not None and proc.proc is not None and not proc.running:
                raise KalshiCtlError(f"{name} exited during startup:\n{proc.log_tail()}")
            code, last = self._get_json(url)
            if ready(code, last):
                return
            time.sleep(0.25)
        raise KalshiCtlError(f"{name} not {what} at {url} within {timeout:.0f}s (last answer: {last})")

    def stop(self) -> dict[str, int | None]:
        """Graceful stop in the order of docs/runbooks/startup.md: gatherers flush, the deduplicator drains, then the
        exchange.

        Before the exchange stops, the busiest market's book is rebuilt from production and compared with the
        exchange's own book (``self.book_check``)."""
        gatherers = [self.pipeline.gatherer_name(i) for i in range(self.pipeline.config.gatherers)]
        codes = {}
        self.markets_at_stop = self.market_counts()
        with contextlib.suppress(httpx.HTTPError):
            self._http.post(f"http://127.0.0.1:{self.sim_port}/_sim/pause")
        for name in gatherers:
            codes[name] = self.supervisor[name].terminate(30)
        self._drain()
        codes["deduplicator"] = self.supervisor["deduplicator"].terminate(30)
        try:
            self.book_check = self.check_book()
        except Exception as exc:  # reported in the verdict, not hidden: the stop goes on
            self.book_error = summarize(exc)
        if self.check_every_book:
            self.books_check = self.check_all_books()
        with contextlib.suppress(httpx.HTTPError):
            self._http.post(f"http://127.0.0.1:{self.sim_port}/_sim/flush")
        codes["exchange"] = self.supervisor["exchange"].terminate(30)
        return codes

    book_check: dict[str, Any] | None = None
    book_error: str | None = None
    books_check: dict[str, Any] | None = None
    markets_at_stop: dict[str, Any] | None = None
    check_every_book = False  # tests: compare every market's rebuilt book with the exchange at stop

    def check_book(self, ticker: str | None = None) -> dict[str, Any] | None:
        """Rebuild a market's book (default: the busiest) now from production; compare with the exchange's book."""
        ticker = ticker or self.busiest_market()
        if ticker is None:
            return None
        _, exchange_book = self._get_json(f"http://127.0.0.1:{self.sim_port}/_sim/book/{ticker}")
        with psycopg.connect(self.pipeline.production_dsn()) as conn:
            rebuilt = book_at(conn, ticker, now_us())
        view = rebuilt.book.as_dict()
        same = isinstance(exchange_book, dict) and (
            [list(x) for x in exchange_book.get("yes", [])] == view["yes_bids"]
            and [list(x) for x in exchange_book.get("no", [])] == view["no_bids"]
        )
        return {
            "ticker": ticker,
            "matches_exchange": same,
            "deltas_applied": rebuilt.deltas_applied,
            "base": rebuilt.base.describe(),
            **view,
        }

    def check_all_books(self) -> dict[str, Any]:
        """Rebuild every market that has deltas and compare each with the exchange's own book."""
        with psycopg.connect(self.pipeline.production_dsn()) as conn:
            tickers = [r[0] for r in conn.execute("SELECT DISTINCT ticker FROM orderbook_deltas").fetchall()]
        mismatched = []
        for ticker in tickers:
            try:
                result = self.check_book(ticker)
            except Exception as exc:  # no snapshot of a market: report it, do not hide it
                mismatched.append({"ticker": ticker, "error": summarize(exc)})
                continue
            if result is None or not result["matches_exchange"]:
                mismatched.append({"ticker": ticker, "base": result and result["base"]})
        return {"checked": len(tickers), "mismatched": mismatched}

    def _drain(self, timeout: float = 30.0) -> None:
        """Wait until production stops growing (the deduplicator merged what the gatherers flushed)."""
        deadline = time.monotonic() + timeout
        last: dict[str, int] | None = None
        while time.monotonic() < deadline:
            counts = self.production_counts()
            if counts == last:
                return
            last = counts
            time.sleep(1.0)

    def close(self) -> None:
        """Kill anything left; delete the clusters and working directory unless asked to keep them (then the
        clusters are only stopped: `kalshictl` commands work on them again after `pg_ctl start`)."""
        self.supervisor.kill_all()
        self._http.close()
        if self.options.keep:
            for cluster in self.pipeline.clusters:
                cluster.stop()
            return
        self.pipeline.destroy()
        shutil.rmtree(self.base_dir, ignore_errors=True)

    # -- sampling -----------------------------------------------------------------------------------------------
    def production_counts(self) -> dict[str, int]:
        try:
            with psycopg.connect(self.pipeline.production_dsn(), connect_timeout=3) as conn:
                return {t: one_row(conn.execute(f"SELECT count(*) FROM {t}"))[0] for t in EVENT_TABLES}
        except psycopg.Error:
            return {}

    def _get_json(self, url: str) -> tuple[int | None, Any]:
        try:
            resp = self._http.get(url)
        except httpx.HTTPError:
            return None, None
        try:
            return resp.status_code, orjson.loads(resp.content) if resp.content else None
        except orjson.JSONDecodeError:
            return resp.status_code, None

    def sample(self) -> DemoState:
        """Health and progress of every service, production row counts, the exchange's message rate."""
        now = time.monotonic()
        state = DemoState(elapsed_s=now - self.started_at)
        _, stats = self._get_json(f"http://127.0.0.1:{self.sim_port}/_sim/stats")
        if isinstance(stats, dict):
            events = stats.get("events") or {}
            emitted = float(sum(v for v in events.values() if isinstance(v, int | float)))
            conns = stats.get("connections") or {}
            state.exchange = {
                "events": emitted,
                "rate": self._rate("exchange", emitted, now),
                "connections": conns.get("open") if isinstance(conns, dict) else conns,
                "markets": stats.get("markets"),
            }
        ports = self.pipeline.http_ports()
        for i in range(self.pipeline.config.gatherers):
            name = self.pipeline.gatherer_name(i)
            code, health = self._get_json(f"http://127.0.0.1:{ports[i]}/health")
            _, status = self._get_json(f"http://127.0.0.1:{ports[i]}/status")
            comps = (health or {}).get("components", {})
            ws = comps.get("websocket", {})
            messages = (status or {}).get("messages") if isinstance(status, dict) else None
            received = float(sum(messages.values())) if isinstance(messages, dict) else None
            state.services.append(
                {
                    "service": name,
                    "status": (health or {}).get("status", "down" if code is None else "?"),
                    "pid": self.supervisor[name].pid if self.supervisor[name].running else None,
                    "markets": comps.get("market_registry", {}).get("markets"),
                    "ws": f"{ws.get('healthy', '-')}/{ws.get('connections', '-')}",
                    "msgs/s": self._rate(name, received, now) if received is not None else None,
                }
            )
        code, health = self._get_json(f"http://127.0.0.1:{ports[-1]}/health")
        sync = ((health or {}).get("components") or {}).get("sync") or {}
        state.max_lag_s = sync.get("max_lag_seconds")
        gat = ((health or {}).get("components") or {}).get("gatherers") or {}
        state.services.append(
            {
                "service": "deduplicator",
                "status": (health or {}).get("status", "down" if code is None else "?"),
                "pid": self.supervisor["deduplicator"].pid if self.supervisor["deduplicator"].running else None,
                "markets": None,
                "ws": f"{sum(1 for v in gat.values() if v == 'connected')}/{len(gat)} gatherers" if gat else "-",
                "msgs/s": None,
            }
        )
        state.production = self.production_counts()
        return state

    def _rate(self, key: str, value: float, now: float) -> float | None:
        prev = self._rates.get(key)
        self._rates[key] = (now, value)
        if prev is None or now <= prev[0]:
            return None
        return max(0.0, (value - prev[1]) / (now - prev[0]))

    # -- summary ------------------------------------------------------------------------------------------------
    def ground_truth_counts(self) -> dict[str, int]:
        """Exchange events emitted, per production table."""
        if not self.ground_truth.exists():
            return dict.fromkeys(KIND_TABLE.values(), 0)
        return {table: len(records) for table, records in load_truth(self.ground_truth).items()}

    def market_counts(self) -> dict[str, Any]:
        """Markets the exchange lists and markets each gatherer registered (and subscribed), asked while they run."""
        _, stats = self._get_json(f"http://127.0.0.1:{self.sim_port}/_sim/stats")
        ports = self.pipeline.http_ports()
        subscribed = {}
        for i in range(self.pipeline.config.gatherers):
            _, health = self._get_json(f"http://127.0.0.1:{ports[i]}/health")
            registry = ((health or {}).get("components") or {}).get("market_registry") or {}
            subscribed[self.pipeline.gatherer_name(i)] = registry.get("markets")
        settings = load_settings(self.pipeline.config_paths[self.pipeline.gatherer_name(0)])
        return {
            "exchange_listed": stats.get("markets") if isinstance(stats, dict) else None,
            "gatherers_subscribed": subscribed,
            "subscribed_statuses": list(settings.require("gatherer").market_status),
        }

    def summary(self, codes: dict[str, int | None]) -> dict[str, Any]:
        """What production holds against what the exchange emitted, the book checks, the market counts, and one
        verdict: ``"all match"`` or what differs."""
        production = self.production_counts()
        truth = self.ground_truth_counts()
        losses = self.losses()
        tables = []
        for table in EVENT_TABLES:
            emitted = truth.get(table) if table in TRUTH_TABLES else None
            stored = production.get(table)
            row = {
                "table": table,
                "exchange_emitted": emitted,
                "production_rows": stored,
                "match": None if emitted is None else emitted == stored,
            }
            if table in losses:  # recorded (inside a gatherer's gap window) vs unrecorded losses, and extra rows
                row |= losses[table]
                row["match"] = row["match"] and not any(losses[table].values())
            tables.append(row)
        markets = dict(self.markets_at_stop or {})
        markets["books_checked"] = self.books_check["checked"] if self.books_check else None
        summary: dict[str, Any] = {
            "exit_codes": codes,
            "tables": tables,
            "book": self.book_check,
            "book_error": self.book_error,
            "books": self.books_check,
            "markets": markets,
            "workdir": str(self.base_dir) if self.options.keep else None,
        }
        diffs = differences(summary)
        summary["differences"] = diffs
        summary["verdict"] = "all match" if not diffs else "differs: " + "; ".join(diffs)
        return summary

    def losses(self) -> dict[str, dict[str, int]]:
        """Per table, as `make chaos` counts them (kalshictl.local.verify): rows lost inside a window every gatherer
        recorded, lost without a record, and duplicated or never emitted (empty when no ground truth)."""
        if not self.ground_truth.exists():
            return {}
        try:
            reports = compare(
                self.pipeline.production_dsn(),
                self.ground_truth,
                [self.pipeline.gatherer_name(i) for i in range(self.pipeline.config.gatherers)],
            )
        except Exception as exc:  # the counts above still speak; the split is a refinement
            log.warning("could not compare production with the ground truth: %s", summarize(exc))
            return {}
        return {
            r.table: {
                "lost_recorded": r.lost_recorded,
                "lost_unrecorded": r.lost_unrecorded,
                "duplicated_or_extra": r.duplicated + r.extra,
            }
            for r in reports
        }

    def busiest_market(self) -> str | None:
        with psycopg.connect(self.pipeline.production_dsn()) as conn:
            row = conn.execute(
                "SELECT ticker FROM orderbook_deltas GROUP BY ticker ORDER BY count(*) DESC LIMIT 1"
            ).fetchone()
        return row[0] if row else None


def differences(summary: dict[str, Any]) -> list[str]:
    """Every way a demo summary departs from "all match", one phrase each (empty when everything matches)."""
    out = []
    for row in summary["tables"]:
        if row["match"] is False:
            emitted, stored = row["exchange_emitted"] or 0, row["production_rows"] or 0
            word = "missing from" if stored < emitted else "extra in"
            phrase = f"{row['table']}: {abs(emitted - stored):,} {word} production ({stored:,} of {emitted:,})"
            if "lost_recorded" in row:
                phrase += (
                    f" [{row['lost_recorded']:,} lost in a recorded gap window, {row['lost_unrecorded']:,} lost"
                    f" without a record, {row['duplicated_or_extra']:,} duplicated or never emitted]"
                )
            out.append(phrase)
    book = summary.get("book")
    if summary.get("book_error"):
        out.append(f"the busiest market's book could not be rebuilt ({summary['book_error']})")
    elif book is None:
        out.append("no market's book changed: nothing was rebuilt")
    elif not book["matches_exchange"]:
        out.append(f"the rebuilt book of {book['ticker']} differs from the exchange's")
    books = summary.get("books")
    if books and books["mismatched"]:
        out.append(f"{len(books['mismatched'])} of {books['checked']} rebuilt books differ from the exchange's")
    failed = {name: code for name, code in summary["exit_codes"].items() if code != 0}
    if failed:
        out.append("exit codes " + ", ".join(f"{name}={code}" for name, code in failed.items()))
    return out


def explain_market_counts(markets: dict[str, Any]) -> str:
    """Why the exchange's, the gatherers' and the book check's market counts differ."""
    subscribed = sorted({n for n in (markets.get("gatherers_subscribed") or {}).values() if n is not None})
    statuses = "/".join(markets.get("subscribed_statuses") or [])
    listed, checked = markets.get("exchange_listed"), markets.get("books_checked")

    def num(value: Any) -> str:
        return "?" if value is None else f"{value:,}"

    return (
        f"markets: the exchange lists {num(listed)} (every status: settled and closed ones too, and those created "
        "during the run); "
        f"each gatherer subscribes to {' / '.join(num(n) for n in subscribed) or '?'}, those in status {statuses} "
        "(every status that can become active again; a settled market sends nothing); "
        f"{num(checked)} books checked: the markets with at least one order-book change in production "
        "(an unchanged book has nothing to rebuild)"
    )
