"""The /health and /metrics HTTP listener shared by the gatherer and the deduplicator (aiohttp)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from aiohttp import web
    from prometheus_client import CollectorRegistry

    from kalshictl.health.thresholds import HealthReport

HealthFn = Callable[[], Awaitable["HealthReport"]]


class HealthServer:
    """Serves ``GET /health`` (seed JSON, 200/503), ``GET /metrics`` (Prometheus text) and optional ``GET /status``."""

    def __init__(
        self,
        host: str,
        port: int,
        health: HealthFn,
        registry: CollectorRegistry | None = None,
        status: Callable[[], Awaitable[dict[str, Any]]] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self._health = health
        self._registry = registry
        self._status = status
        self._runner: web.AppRunner | None = None

    async def _handle_health(self, request: web.Request) -> web.Response:
        from aiohttp import web

        report = await self._health()
        return web.Response(
            body=orjson.dumps(report.as_dict()), status=report.http_code, content_type="application/json"
        )

    async def _handle_metrics(self, request: web.Request) -> web.Response:
        from aiohttp import web
        from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

        body = generate_latest(self._registry or REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _handle_status(self, request: web.Request) -> web.Response:
        from aiohttp import web

        if self._status is None:
            raise web.HTTPNotFound()
        data = await self._status()
        return web.Response(body=orjson.dumps(data, default=str), content_type="application/json")

    async def start(self) -> None:
        """Bind and start serving; ``self.port`` holds the bound port afterwards (port 0 = pick a free one)."""
        from aiohttp import web

        app = web.Application()
        app.router.add_get("/health", self._handle_health)
        app.router.add_get("/metrics", self._handle_metrics)
        app.router.add_get("/status", self._handle_status)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        sockets = site._server.sockets if site._server else []  # type: ignore[union-attr]
        if sockets:
            self.port = sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
