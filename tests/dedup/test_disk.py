"""The deduplicator watches production's disk (kalshictl/health/disk.py): a volume nearly full makes /health
unhealthy, and the free space is a metric."""

from __future__ import annotations

import asyncio

import httpx
from prometheus_client.parser import text_string_to_metric_families

from kalshictl.dedup.service import Deduplicator
from tests.dedup.conftest import DedupEnv, wait_until


async def test_production_disk_in_health_and_metrics(dedup_env: DedupEnv) -> None:
    with dedup_env.prod() as c:
        db_bytes = c.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    size = int(db_bytes / 0.95)  # 5 % free: below the 10 % critical threshold
    dedup_env.extra = {"disk": {"size_bytes": size, "interval_s": 1}}
    service = Deduplicator(dedup_env.settings())
    task = asyncio.create_task(service.run())
    try:
        await asyncio.wait_for(service.wait_started(), 30)
        await wait_until(lambda: service.disk.reading is not None, 20, "production's disk read")
        async with httpx.AsyncClient(timeout=5) as client:
            resp = await client.get(service.http_url + "/health")
            metrics = (await client.get(service.http_url + "/metrics")).text
        body = resp.json()
        assert resp.status_code == 503 and body["details"]["disk"]["status"] == "unhealthy", body
        assert body["details"]["disk"]["source"] == "size_bytes" and body["details"]["disk"]["total_bytes"] == size
        assert any("disk-filling.md" in r for r in body["details"]["reasons"])
        samples = {m.name: m.samples[0].value for m in text_string_to_metric_families(metrics) if m.samples}
        assert samples["kalshi_db_disk_size_bytes"] == size
        assert samples["kalshi_db_disk_free_bytes"] == size - samples["kalshi_db_database_bytes"]  # one reading
    finally:
        service.request_stop()
        await asyncio.wait_for(task, 30)
