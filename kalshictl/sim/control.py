"""The control API under ``/_sim/`` (no auth, no rate limit) for tests and the chaos suite (docs/sim.md,
"Control API")."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import orjson
from aiohttp import web

from kalshictl.sim.activity import Activity
from kalshictl.sim.faults import FaultInjector
from kalshictl.sim.fmt import Clock
from kalshictl.sim.kalshi_http import BadRequest, error_response, json_response, status_filter
from kalshictl.sim.markets import Universe


class Controlled(Protocol):
    """What the control API asks of the exchange as a whole (``kalshictl.sim.exchange.SimExchange``)."""

    @property
    def rest_url(self) -> str: ...
    @property
    def ws_url(self) -> str: ...
    @property
    def ground_truth_path(self) -> Path | None: ...
    def run_config(self) -> dict[str, Any]: ...
    def options(self) -> dict[str, Any]: ...
    def set_options(self, **changes: Any) -> dict[str, Any]: ...
    def subscriptions(self) -> list[dict[str, Any]]: ...
    def stats(self) -> dict: ...
    def drop_connections(self) -> int: ...
    def flush(self) -> int: ...
    def book(self, ticker: str) -> dict | None: ...


class ControlApi:
    """``/_sim/*`` handlers: the exchange's own operations, plus its activity, faults, clock and markets."""

    def __init__(
        self, ex: Controlled, universe: Universe, activity: Activity, faults: FaultInjector, clock: Clock
    ) -> None:
        self.ex = ex
        self.u = universe
        self.activity = activity
        self.faults = faults
        self.clock = clock

    def routes(self) -> list[web.RouteDef]:
        """All control routes."""
        return [
            web.get("/_sim", self.index),
            web.get("/_sim/", self.index),
            web.get("/_sim/options", self.get_options),
            web.post("/_sim/options", self.set_options),
            web.get("/_sim/subscriptions", self.subscriptions),
            web.get("/_sim/stats", self.stats),
            web.get("/_sim/config", self.config),
            web.get("/_sim/faults", self.get_faults),
            web.post("/_sim/faults", self.set_faults),
            web.post("/_sim/drop", self.drop),
            web.post("/_sim/refuse", self.refuse),
            web.post("/_sim/pause", self.pause),
            web.post("/_sim/resume", self.resume),
            web.post("/_sim/step", self.step),
            web.post("/_sim/lifecycle", self.lifecycle),
            web.post("/_sim/rate", self.rate),
            web.post("/_sim/jump", self.jump),
            web.post("/_sim/flush", self.flush),
            web.get("/_sim/book/{ticker}", self.book),
        ]

    async def index(self, request: web.Request) -> web.Response:
        """Every control endpoint with what it does (the first line of its handler's docstring)."""
        endpoints = []
        for route in self.routes():
            if route.path in ("/_sim", "/_sim/"):
                continue
            doc = (route.handler.__doc__ or "").strip().splitlines()[0]
            endpoints.append({"method": route.method, "path": route.path, "does": doc})
        return json_response({"endpoints": endpoints, "rest_url": self.ex.rest_url, "ws_url": self.ex.ws_url})

    async def get_options(self, request: web.Request) -> web.Response:
        """The protocol options (ack_seq, snapshot_seq, repeat_subscribe, delta_ts_ms, ...)."""
        return json_response(self.ex.options())

    async def set_options(self, request: web.Request) -> web.Response:
        """Change protocol options now: JSON body ``{"ack_seq": "last", ...}`` (400 names a bad one)."""
        try:
            changes = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return error_response(400, "bad_request", "body must be a JSON object of options")
        if not isinstance(changes, dict):
            return error_response(400, "bad_request", "body must be a JSON object of options")
        try:
            return json_response(self.ex.set_options(**changes))
        except (TypeError, ValueError) as exc:
            return error_response(400, "bad_request", str(exc))

    async def subscriptions(self, request: web.Request) -> web.Response:
        """Each open WS connection's subscriptions: sid, channel, tickers (null = all markets / global), seq.

        ``?missing=orderbook_delta[&status=open,paused]``: also the markets no subscription of that channel covers.
        """
        conns = self.ex.subscriptions()
        by_channel: dict[str, dict] = {}
        for conn in conns:
            for sub in conn["subscriptions"]:
                entry = by_channel.setdefault(sub["channel"], {"subscriptions": 0, "all_markets": 0, "tickers": set()})
                entry["subscriptions"] += 1
                if sub["tickers"] is None:
                    entry["all_markets"] += 1
                else:
                    entry["tickers"].update(sub["tickers"])
        summary = {
            ch: {"subscriptions": e["subscriptions"], "all_markets": e["all_markets"], "markets": len(e["tickers"])}
            for ch, e in sorted(by_channel.items())
        }
        out: dict = {"connections": conns, "by_channel": summary}
        channel = request.query.get("missing")
        if channel:  # markets (of ?status=, Kalshi's filter values) that no subscription of this channel covers
            try:
                statuses = status_filter(request)
            except BadRequest as exc:
                return error_response(400, "bad_request", str(exc))
            missing = self._missing(by_channel.get(channel), statuses)
            out["missing"] = {"channel": channel, "count": len(missing), "tickers": missing[:1000]}
        return json_response(out)

    def _missing(self, covering: dict | None, statuses: frozenset[str] | None) -> list[str]:
        """The markets (of ``statuses``) that no subscription in ``covering`` (one channel's summary) covers."""
        if covering is not None and covering["all_markets"]:
            return []
        covered = covering["tickers"] if covering is not None else set()
        u = self.u
        return [
            t
            for idx in range(u.n_markets)
            if (statuses is None or u.status(idx) in statuses) and (t := u.ticker(idx)) not in covered
        ]

    async def stats(self, request: web.Request) -> web.Response:
        """Counters: events emitted, messages sent by type, faults, connections, REST answers."""
        return json_response(self.ex.stats())

    async def config(self, request: web.Request) -> web.Response:
        """Seed, market count, URLs and settings of this run."""
        return json_response(self.ex.run_config())

    async def get_faults(self, request: web.Request) -> web.Response:
        """The active fault spec."""
        return json_response({"spec": str(self.faults.spec), "counts": self.faults.counts})

    async def set_faults(self, request: web.Request) -> web.Response:
        """Replace the fault spec: body ``{"spec": "drop=0.01,..."}`` or the spec as plain text."""
        raw = await request.read()
        spec = raw.decode().strip()
        if spec.startswith("{"):
            try:
                spec = orjson.loads(raw).get("spec") or ""
            except (orjson.JSONDecodeError, AttributeError):
                return error_response(400, "bad_request", "body must be {'spec': '...'} or a plain spec")
        try:
            parsed = self.faults.set(spec)
        except ValueError as exc:
            return error_response(400, "bad_request", str(exc))
        return json_response({"spec": str(parsed)})

    async def drop(self, request: web.Request) -> web.Response:
        """Drop every WebSocket connection now (``?refuse=S``: and refuse new ones for S seconds, an outage)."""
        refuse = float(request.query.get("refuse", "0"))
        if refuse > 0:
            self.faults.refuse_now(refuse)
        return json_response({"dropped": self.ex.drop_connections()})

    async def refuse(self, request: web.Request) -> web.Response:
        """Refuse new WebSocket connections for ``?seconds=S`` (default 5)."""
        seconds = float(request.query.get("seconds", "5"))
        self.faults.refuse_now(seconds)
        return json_response({"refusing_for": seconds})

    async def pause(self, request: web.Request) -> web.Response:
        """Stop generating activity."""
        self.activity.paused = True
        return json_response({"paused": True})

    async def resume(self, request: web.Request) -> web.Response:
        """Resume generating activity."""
        self.activity.paused = False
        return json_response({"paused": False})

    async def step(self, request: web.Request) -> web.Response:
        """Generate ``?n=N`` events now (also while paused)."""
        n = int(request.query.get("n", "1"))
        return json_response({"emitted": self.activity.step(n)})

    async def jump(self, request: web.Request) -> web.Response:
        """Move the exchange's clock forward by ``?seconds=S`` (a time-compressed soak jumps a day at a time)."""
        try:
            now_ms = self.clock.jump(float(request.query["seconds"]))
        except (KeyError, ValueError) as exc:
            return error_response(400, "bad_request", f"?seconds=S (>= 0): {exc}")
        return json_response({"now_ms": now_ms})

    async def lifecycle(self, request: web.Request) -> web.Response:
        """Create ``?create=N`` markets, pause ``?deactivate=N`` and re-activate ``?activate=N`` now (their tickers)."""
        try:
            counts = {k: int(request.query.get(k, "0")) for k in ("create", "deactivate", "activate")}
        except ValueError:
            return error_response(400, "bad_request", "create, deactivate and activate must be integers")
        act = self.activity
        return json_response(
            {
                "created": act.create_now(counts["create"]) if counts["create"] > 0 else [],
                "deactivated": act.set_active_now(counts["deactivate"], False),
                "activated": act.set_active_now(counts["activate"], True),
            }
        )

    async def rate(self, request: web.Request) -> web.Response:
        """Set the activity rate to ``?rate=R`` events/s."""
        self.activity.rate = float(request.query["rate"])
        return json_response({"rate": self.activity.rate})

    async def flush(self, request: web.Request) -> web.Response:
        """Flush the ground-truth log to its file."""
        written = self.ex.flush()
        return json_response(
            {"path": str(self.ex.ground_truth_path) if self.ex.ground_truth_path else None, "written": written}
        )

    async def book(self, request: web.Request) -> web.Response:
        """The sim's own book of a market in integer units (no side: no-leg prices), ascending."""
        book = self.ex.book(request.match_info["ticker"])
        if book is None:
            return error_response(404, "not_found", "market not found")
        return json_response(book)
