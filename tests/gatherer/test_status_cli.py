"""``kalshictl gather status`` shows the market placement (placed / unplaced), the resyncing markets and the command
rate from a running gatherer's /status."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from kalshictl.gatherer.service import Gatherer
from kalshictl.sim import SimConfig, SimExchange
from tests.gatherer.conftest import make_settings, until
from tests.helpers import write_config


async def test_status_table_shows_placement_resync_and_command_rate(gatherer_dsn: str, tmp_path) -> None:
    # capacity 3 connections x 2 subscriptions x 4 markets = 24 < the recordable markets: some stay unplaced
    ws = {"markets_per_subscription": 4, "subscriptions_per_connection": 2}
    async with SimExchange(SimConfig(markets=60, seed=17, rate=100, paused=True)) as ex:
        s = make_settings(gatherer_dsn, ex.rest_url, ex.ws_url, websocket=ws)
        g = Gatherer(s, progress=False)
        task = asyncio.create_task(g.run())
        try:
            assert await g.wait_ready(30)
            await until(lambda: not g.router.sync.awaiting, 15, "every placed market's first snapshot")
            cov = g.coverage()
            assert cov is not None and cov["unplaced"] > 0 and cov["placed"] == 24
            budget = s.websocket.commands_per_minute
            cfg = write_config(tmp_path / "g.yaml", {"gatherer": s.model_dump(mode="json")})
            base = g.health_url.removesuffix("/health")
            proc = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "kalshictl", "gather", "status", "--config", str(cfg), "--url", base],
                capture_output=True,
                text=True,
                env={**os.environ, "COLUMNS": "200"},
                timeout=60,
            )
        finally:
            g.request_stop()
            await asyncio.wait_for(task, 30)
    rows = {}
    for line in proc.stdout.splitlines():
        cells = [c.strip() for c in line.strip("│┃ ").split("│")]
        if len(cells) == 2:
            rows[cells[0]] = cells[1]
    assert proc.returncode != 0, "unplaced markets make the gatherer unhealthy"
    assert rows["placed"] == f"24/{cov['recordable']} recordable (capacity 24)", proc.stdout
    assert rows["unplaced"] == str(cov["unplaced"])
    assert rows["resyncing"] == "0"
    assert rows["disk"] == "healthy: unknown, from unknown"  # no disk.path / size_bytes in the test settings
    assert rows["retention"].startswith("healthy: keep 7 days, 0 partitions held")
    per_min, _, rest = rows["commands_per_min"].partition("/")
    assert int(per_min) > 0 and rest == f"{budget} (busiest connection / budget)"
