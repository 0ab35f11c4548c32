"""SimExchange: wires universe, activity, feed, REST, WS and control API into one aiohttp server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import tempfile
import threading
import time
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from typing import Any

from aiohttp import web

from kalshictl.kalshi.auth import (
    HEADER_KEY,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    PublicKey,
    load_public_key,
    verify_signature,
)  # fmt: skip
from kalshictl.sim.activity import Activity
from kalshictl.sim.book import NO, YES
from kalshictl.sim.config import OPTIONS, REST_PREFIX, WS_PATH, SimConfig, check_option
from kalshictl.sim.connection import Connections
from kalshictl.sim.control import ControlApi
from kalshictl.sim.faults import FaultInjector, FaultSpec
from kalshictl.sim.feed import Feed
from kalshictl.sim.fmt import Clock
from kalshictl.sim.ground_truth import GroundTruth
from kalshictl.sim.history import HistoryWorld
from kalshictl.sim.history_rest import HistoryApi
from kalshictl.sim.markets import Universe
from kalshictl.sim.ratelimit import RateLimiter
from kalshictl.sim.rest import RestApi, RestGate
from kalshictl.sim.stats import Stats
from kalshictl.sim.trades import TradeLog
from kalshictl.sim.ws import handle_ws


class SimExchange:
    """The local Kalshi exchange. ``async with SimExchange(SimConfig(markets=50, seed=1)) as ex: ...``."""

    def __init__(self, cfg: SimConfig | None = None, **overrides: Any) -> None:
        cfg = cfg or SimConfig()
        self.cfg = replace(cfg, **overrides)  # a copy: set_options() never changes the caller's config
        FaultSpec.parse(self.cfg.faults)  # fail early on a bad spec
        self.limiter = RateLimiter(self.cfg.rest_tier)
        self.public_key: PublicKey | None = None
        if self.cfg.public_key is not None:
            pk = self.cfg.public_key
            if isinstance(pk, str) and "-----BEGIN" not in pk:
                pk = Path(pk)
            self.public_key = load_public_key(pk)
        self.connections = Connections()
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task] = []
        self._port = 0
        self.ground_truth_path: Path | None = None
        self._started = False

    # ----- lifecycle --------------------------------------------------------------------------------------------
    async def start(self) -> SimExchange:
        """Build the markets, bind the port and start serving and generating activity."""
        cfg = self.cfg
        self.universe = Universe(cfg.markets, cfg.seed, cfg.anchor_ts, cfg.mve_share)
        self.history = HistoryWorld(self.universe, cfg.history_days, cfg.seed, cfg.history_markets_per_day)
        self._temp_truth = False
        if cfg.record_ground_truth:
            if cfg.ground_truth is not None:
                self.ground_truth_path = Path(cfg.ground_truth)
                self.ground_truth_path.parent.mkdir(parents=True, exist_ok=True)
                self.ground_truth_path.write_bytes(b"")
            else:  # readable while the exchange runs, removed by stop()
                fd, name = tempfile.mkstemp(prefix="kalshictl-sim-gt-", suffix=".jsonl")
                os.close(fd)
                self.ground_truth_path = Path(name)
                self._temp_truth = True
        self.gt = GroundTruth(self.ground_truth_path)
        self.counters = Stats()
        self.faults = FaultInjector(cfg.faults, cfg.seed)
        self.clock = Clock()
        self.trades = TradeLog(cfg.trade_history)
        self.history.seed_live_trades(self.trades)
        self.feed = Feed(self.universe, self.gt, self.faults, self.counters, cfg, drop_all=self.drop_connections)
        self.activity = Activity(self.universe, self.feed, self.trades, cfg, self.clock)

        gate = RestGate(self.check_auth, self.limiter, self.faults, self.counters)
        app = web.Application(middlewares=[gate.middleware], client_max_size=1024**2)
        app.add_routes(HistoryApi(self.history, self.universe).routes())  # before /markets/{ticker}
        app.add_routes(RestApi(self.universe, self.trades, self.history.archived_idx, self.cfg, self.faults).routes())
        app.add_routes(ControlApi(self, self.universe, self.activity, self.faults, self.clock).routes())
        app.router.add_get(WS_PATH, self._ws)
        app.on_shutdown.append(self._on_shutdown)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        family = socket.AF_INET6 if ":" in cfg.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((cfg.host, cfg.port))
        self._port = sock.getsockname()[1]
        site = web.SockSite(self._runner, sock, backlog=1024)
        await site.start()
        self._tasks = [asyncio.create_task(self.activity.run()), asyncio.create_task(self._flush_loop())]
        self._started = True
        return self

    async def stop(self) -> None:
        """Stop activity, close every connection, stop serving and flush the ground truth."""
        if not self._started:
            return
        self._started = False
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        if self._runner is not None:
            await self._runner.cleanup()
        self.gt.close()
        if self._temp_truth and self.ground_truth_path is not None:
            self.ground_truth_path.unlink(missing_ok=True)

    async def _on_shutdown(self, app: web.Application) -> None:
        await self.connections.shutdown()

    async def __aenter__(self) -> SimExchange:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.gt_flush_s)
            self.gt.flush()

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        return await handle_ws(self, request)

    # ----- addresses --------------------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        """The bound TCP port."""
        return self._port

    @property
    def base_url(self) -> str:
        """``http://host:port``."""
        host = f"[{self.cfg.host}]" if ":" in self.cfg.host else self.cfg.host
        return f"http://{host}:{self._port}"

    @property
    def rest_url(self) -> str:
        """REST base URL, ending in ``/trade-api/v2``."""
        return self.base_url + REST_PREFIX

    @property
    def ws_url(self) -> str:
        """WebSocket URL, ending in ``/trade-api/ws/v2``."""
        return "ws" + self.base_url[4:] + WS_PATH

    @property
    def control_url(self) -> str:
        """Base URL of the control API (``.../_sim``)."""
        return self.base_url + "/_sim"

    # ----- control ----------------------------------------------------------------------------------------------
    def stats(self) -> dict:
        """Events emitted, messages sent by type, faults injected, connections, REST answers (``self.counters``)."""
        return self.counters.as_dict(
            self.faults.counts,
            {
                "ground_truth_records": self.gt.records,
                "markets": self.universe.n_markets,
                "paused": self.activity.paused,
                "fault_spec": str(self.faults.spec),
            },
        )

    def book(self, ticker: str) -> dict | None:
        """The sim's book of ``ticker`` in integer units: ``{"ticker", "yes": [[p, s]...], "no": [...]}``."""
        idx = self.universe.index_of(ticker)
        if idx is None:
            return None
        book = self.universe.peek(idx).book
        return {
            "ticker": ticker,
            "yes": [list(lv) for lv in book.levels(YES)],
            "no": [list(lv) for lv in book.levels(NO)],
        }

    def options(self) -> dict[str, Any]:
        """The runtime-changeable protocol options (``SimConfig`` fields named in ``config.OPTIONS``)."""
        return {name: getattr(self.cfg, name) for name in OPTIONS}

    def set_options(self, **changes: Any) -> dict[str, Any]:
        """Change protocol options now (ValueError naming a bad one; nothing changes then); returns all options."""
        checked = {name: check_option(name, value) for name, value in changes.items()}
        for name, value in checked.items():
            setattr(self.cfg, name, value)
        return self.options()

    def subscriptions(self) -> list[dict[str, Any]]:
        """Every open WS connection with its subscriptions: ``[{"connection", "subscriptions": [{"sid", "channel",
        "tickers" (sorted; None = all markets / global), "seq"}]}]``."""
        out = []
        for conn in self.connections.live():
            subs = [
                {
                    "sid": sub.sid,
                    "channel": sub.channel,
                    "tickers": None if sub.tickers is None else sorted(sub.tickers),
                    "seq": sub.seq,
                }
                for sub in sorted(conn.subs.values(), key=lambda s: s.sid)
            ]
            out.append({"connection": conn.cid, "subscriptions": subs})
        return out

    def run_config(self) -> dict[str, Any]:
        """Seed, market count, URLs and settings of this run (``GET /_sim/config``)."""
        cfg = self.cfg
        return {
            "seed": cfg.seed,
            "markets": self.universe.n_markets,
            "events": self.universe.n_events,
            "series": len(self.universe.series_names),
            "rate": self.activity.rate,
            "rest_tier": self.limiter.tier,
            "rest_url": self.rest_url,
            "ws_url": self.ws_url,
            "ground_truth": str(self.ground_truth_path) if self.ground_truth_path else None,
            "auth": self.public_key is not None,
            "max_markets_per_sub": cfg.max_markets_per_sub,
            "mve_share": cfg.mve_share,
            "options": self.options(),
        }

    def set_faults(self, spec: str | FaultSpec) -> FaultSpec:
        """Replace the active fault spec (raises ValueError on a bad spec)."""
        return self.faults.set(spec)

    def drop_connections(self) -> int:
        """Abort every WebSocket connection now; returns how many."""
        return self.connections.abort_all()

    def pause(self) -> None:
        """Stop generating activity (already queued frames are still delivered)."""
        self.activity.paused = True

    def resume(self) -> None:
        """Resume generating activity."""
        self.activity.paused = False

    def step(self, n: int = 1) -> int:
        """Generate at least ``n`` events now (works while paused); returns how many."""
        return self.activity.step(n)

    def flush(self) -> int:
        """Flush the ground truth to its file; returns records written."""
        return self.gt.flush()

    def market_key(self, ticker: str) -> int | None:
        """The universe index of ``ticker`` (the key ``feed.snapshot`` takes), or None."""
        return self.universe.index_of(ticker)

    def check_auth(self, request: web.Request, method: str, path: str) -> str | None:
        """None if the request may proceed, else the reason to reject it with 401."""
        if self.public_key is None:
            return None
        h = request.headers
        key, ts, sig = h.get(HEADER_KEY), h.get(HEADER_TIMESTAMP), h.get(HEADER_SIGNATURE)
        if not (key and ts and sig):
            return "missing KALSHI-ACCESS-KEY / KALSHI-ACCESS-TIMESTAMP / KALSHI-ACCESS-SIGNATURE"
        try:
            ts_ms = int(ts)
        except ValueError:
            return "invalid KALSHI-ACCESS-TIMESTAMP"
        if abs(time.time() * 1000 - ts_ms) > self.cfg.auth_max_skew_s * 1000:
            return "KALSHI-ACCESS-TIMESTAMP outside the accepted window"
        if not verify_signature(self.public_key, ts, method, path, sig):
            return "invalid signature"
        return None

    # ----- background thread ------------------------------------------------------------------------------------
    @classmethod
    def start_in_thread(cls, cfg: SimConfig | None = None, **overrides: Any) -> SimThread:
        """Run an exchange on its own event loop in a daemon thread (for synchronous code)."""
        return SimThread(cls(cfg, **overrides))


class SimThread:
    """Handle of an exchange running in a background thread.

    ``handle.ex`` is the exchange: read its plain attributes (``rest_url``, ``ws_url``, ``ground_truth_path``...)
    directly, and run anything that touches its state on its loop with ``handle.call(handle.ex.step, 100)``.
    """

    def __init__(self, ex: SimExchange) -> None:
        self.ex = ex
        self.loop = asyncio.new_event_loop()
        started: Future = Future()
        self._thread = threading.Thread(target=self._run, args=(started,), name="kalshictl-sim", daemon=True)
        self._thread.start()
        started.result(timeout=120)

    def _run(self, started: Future) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.ex.start())
        except BaseException as exc:
            started.set_exception(exc)
            return
        started.set_result(None)
        self.loop.run_forever()
        self.loop.run_until_complete(self.ex.stop())
        self.loop.close()

    def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` on the exchange's loop and return its result."""

        async def _call() -> Any:
            return fn(*args, **kwargs)

        return asyncio.run_coroutine_threadsafe(_call(), self.loop).result(timeout=30)

    def stop(self) -> None:
        """Stop the exchange (flushing ground truth) and join the thread."""
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=30)

    def __enter__(self) -> SimThread:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
