"""The deduplicator's wait for a healthy gatherer reads any /health body without crashing (a JSON list, a string)."""

from __future__ import annotations

import pytest
from aiohttp import web

from kalshictl.config import DedupSettings
from kalshictl.dedup.service import Deduplicator
from kalshictl.errors import KalshiCtlError


async def _serve(body: bytes) -> tuple[web.AppRunner, str]:
    async def health(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/health", health)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}/health"


def _service(url: str) -> Deduplicator:
    db = {"dsn": "postgresql://dedup_reader@127.0.0.1:1/kalshi_ts", "allow_insecure": True, "sslmode": "disable"}
    settings = DedupSettings.model_validate(
        {
            "production": {**db, "dsn": "postgresql://deduplicator@127.0.0.1:1/kalshi_prod"},
            "gatherers": [{"name": "g1", "database": db, "health_url": url}],
            "sync": {"wait_for_gatherer_s": 0},
        }
    )
    return Deduplicator(settings)


@pytest.mark.parametrize("body", [b"[1]", b'"healthy"', b"null", b"1", b'{"status": ["healthy"]}'])
async def test_a_health_body_that_is_not_an_object_is_unhealthy(body):
    runner, url = await _serve(body)
    try:
        service = _service(url)
        assert await service._gatherer_healthy(service.settings.gatherers[0]) is False
        with pytest.raises(KalshiCtlError, match="no gatherer healthy"):
            await service._wait_for_gatherer()
    finally:
        await runner.cleanup()


async def test_a_healthy_object_is_healthy():
    runner, url = await _serve(b'{"status": "healthy"}')
    try:
        service = _service(url)
        assert await service._gatherer_healthy(service.settings.gatherers[0]) is True
    finally:
        await runner.cleanup()
