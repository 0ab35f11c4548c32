"""Fixtures for the operations tests: real /health servers (HealthServer), moto's Secrets Manager server, the CLI."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from kalshictl.db.embedded import free_port
from kalshictl.health.server import HealthServer
from kalshictl.health.thresholds import HealthReport


@dataclass
class FakeService:
    """A gatherer stand-in: the real HealthServer with a health function whose status the test controls."""

    status: str = "unhealthy"
    requests: int = 0
    polled: threading.Event = field(default_factory=threading.Event)
    url: str = ""

    async def health(self) -> HealthReport:
        self.requests += 1
        self.polled.set()
        return HealthReport(self.status, {"websocket": {"connections": 150, "healthy": 150}})  # type: ignore[arg-type]


@pytest.fixture
def health_service() -> Iterator[Callable[[str], FakeService]]:
    """Start FakeServices on 127.0.0.1 (one event loop thread for all of them)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    servers: list[HealthServer] = []

    def make(status: str = "unhealthy") -> FakeService:
        svc = FakeService(status)
        server = HealthServer("127.0.0.1", 0, svc.health)
        asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
        servers.append(server)
        svc.url = server.url
        return svc

    yield make
    for server in servers:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's server mode (a real HTTP Secrets Manager) on a free loopback port."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def sm_client(moto_endpoint: str):
    """A boto3 Secrets Manager client for the test's own setup and inspection."""
    import boto3

    return boto3.client(
        "secretsmanager",
        endpoint_url=moto_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
