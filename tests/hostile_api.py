"""A hostile REST exchange on 127.0.0.1: serves fixed JSON pages that the sim never produces (malformed objects).

Real HTTP, the real :class:`~kalshictl.kalshi.rest.KalshiRest` client on the other side; only the payloads are
adversarial. Used by the bad-input tests of #15.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from aiohttp import web


@asynccontextmanager
async def hostile_api(pages: dict[str, Any]) -> AsyncIterator[str]:
    """Serve ``pages[path]`` at ``/trade-api/v2<path>``; yields the base REST URL.

    A page is a JSON-able body, or a callable taking the path's request count (1, 2, ...) and returning
    ``(http status, body)``.
    """
    hits: dict[str, int] = {}

    async def handle(request: web.Request) -> web.Response:
        path = request.path.removeprefix("/trade-api/v2")
        hits[path] = hits.get(path, 0) + 1
        if path not in pages:
            return web.Response(status=404, text='{"error": "not found"}', content_type="application/json")
        page = pages[path]
        status = 200
        if callable(page):  # a callable decides per request: (status, body)
            status, page = page(hits[path])
        return web.Response(status=status, body=orjson.dumps(page), content_type="application/json")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/trade-api/v2"
    finally:
        await runner.cleanup()
