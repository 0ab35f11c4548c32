"""More than 100 WebSocket connections (a full gatherer runs about 150, docs/gatherer.md): each opens, subscribes."""

from __future__ import annotations

import asyncio

from kalshictl.gatherer.service import Gatherer
from kalshictl.sim import SimConfig, SimExchange
from tests.gatherer.conftest import make_settings, until


async def test_150_connections_all_subscribe(gatherer_dsn: str) -> None:
    async with SimExchange(SimConfig(markets=600, seed=4, rate=0, paused=True)) as ex:
        settings = make_settings(
            gatherer_dsn, ex.rest_url, ex.ws_url, websocket={"global_connections": 6, "orderbook_connections": 144}
        )
        g = Gatherer(settings, progress=False)
        task = asyncio.create_task(g.run())
        try:
            assert await g.wait_ready(60)
            assert g.manager.target == 150
            await until(lambda: g.manager.healthy_count() == 150, 30, "all 150 connections subscribed")
            assert ex.stats()["connections"]["open"] == 150
            report = await g.health()
            assert report.status == "healthy"
            assert report.components["websocket"] == {"connections": 150, "healthy": 150}
        finally:
            g.request_stop()
            await asyncio.wait_for(task, 30)
