"""The /health and /metrics HTTP listener shared by the gatherer and the deduplicator (aiohttp's low-level server).

What a client can hold is bounded (docs/security.md): a request's headers must arrive within ``header_timeout_s`` of
connecting (or of the previous response), at most ``max_connections`` are open at once (more are closed when
accepted), a request line or header field is at most 4 KiB and there are at most 32 fields. A refused request logs
one line, without a traceback.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

if TYPE_CHECKING:
    import asyncio

    from aiohttp.web_protocol import RequestHandler
    from prometheus_client import CollectorRegistry

    from kalshictl.health.thresholds import HealthReport

HealthFn = Callable[[], Awaitable["HealthReport"]]
log = logging.getLogger("kalshictl.health")

HEADER_TIMEOUT_S = 10.0
MAX_CONNECTIONS = 64
MAX_FIELD_BYTES = 4096
MAX_HEADERS = 32


class _OneLineLog(logging.LoggerAdapter):
    """aiohttp's server logger with each exception reduced to one line (a bad request is routine, not a crash)."""

    def exception(self, msg: object, *args: Any, exc_info: Any = True, **kwargs: Any) -> None:
        error = exc_info if isinstance(exc_info, BaseException) else None
        reason = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}" if error and str(error) else ""
        self.logger.warning(f"{msg}: %s", *args, reason or type(error).__name__, **kwargs)


class _LimitedServer(web.Server):
    """aiohttp's server, closing a connection at accept time when ``max_connections`` are already open."""

    def __init__(self, handler: Any, *, max_connections: int, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.max_connections = max_connections
        self.refused = 0
        self._warned_at = float("-inf")

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        if len(self._connections) >= self.max_connections:
            self.refused += 1
            transport.abort()
            if time.monotonic() - self._warned_at >= 60.0:  # one line a minute while flooded
                self._warned_at = time.monotonic()
                log.warning(
                    "health listener: %d connections open, refusing more (%d so far)",
                    self.max_connections,
                    self.refused,
                )
            return
        super().connection_made(handler, transport)


class HealthServer:
    """Serves ``GET /health`` (200/503, docs/runbooks/reading-health.md), ``GET /metrics`` (Prometheus text) and
    optional ``GET /status``."""

    def __init__(
        self,
        host: str,
        port: int,
        health: HealthFn,
        registry: CollectorRegistry | None = None,
        status: Callable[[], Awaitable[dict[str, Any]]] | None = None,
        *,
        header_timeout_s: float = HEADER_TIMEOUT_S,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.host = host
        self.port = port
        self._health = health
        self._registry = registry
        self._status = status
        self.header_timeout_s = header_timeout_s
        self.max_connections = max_connections
        self._runner: web.ServerRunner | None = None
        self._routes = {
            "/health": self._handle_health,
            "/metrics": self._handle_metrics,
            "/status": self._handle_status,
        }

    async def _dispatch(self, request: web.BaseRequest) -> web.StreamResponse:
        route = self._routes.get(request.path)
        if route is None:
            return web.Response(status=404, text="not found")
        if request.method != "GET":
            return web.Response(status=405, text="method not allowed", headers={"Allow": "GET"})
        return await route()

    async def _handle_health(self) -> web.Response:
        report = await self._health()
        return web.Response(
            body=orjson.dumps(report.as_dict()), status=report.http_code, content_type="application/json"
        )

    async def _handle_metrics(self) -> web.Response:
        from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

        body = generate_latest(self._registry or REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _handle_status(self) -> web.Response:
        if self._status is None:
            return web.Response(status=404, text="not found")
        data = await self._status()
        return web.Response(body=orjson.dumps(data, default=str), content_type="application/json")

    async def start(self) -> None:
        """Bind and start serving; ``self.port`` holds the bound port afterwards (port 0 = pick a free one)."""
        server = _LimitedServer(
            self._dispatch,
            max_connections=self.max_connections,
            # aiohttp arms this from the moment a connection is made, and closes it if no request is complete by then
            keepalive_timeout=self.header_timeout_s,
            max_line_size=MAX_FIELD_BYTES,
            max_field_size=MAX_FIELD_BYTES,
            max_headers=MAX_HEADERS,
            logger=_OneLineLog(logging.getLogger("aiohttp.server"), {}),
            access_log=None,
        )
        self._runner = web.ServerRunner(server)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        addresses = self._runner.addresses  # (host, port[, ...]) of each bound socket
        if addresses:
            self.port = addresses[0][1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
