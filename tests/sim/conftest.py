"""Fixtures of the sim tests: a running exchange on a free port and a small WebSocket client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import orjson
import pytest
import websockets

from kalshictl.sim import SimConfig, SimExchange

ANCHOR = 1_795_737_600  # a fixed day so market dates are reproducible


def config(**kw: Any) -> SimConfig:
    """A small, fast exchange config for tests (activity paused unless asked)."""
    base: dict[str, Any] = {
        "markets": 60, "seed": 1, "rate": 400.0, "heartbeat_s": 10.0, "anchor_ts": ANCHOR, "paused": True,
    }  # fmt: skip
    base.update(kw)
    return SimConfig(**base)


@pytest.fixture
async def sim(request: pytest.FixtureRequest) -> AsyncIterator[SimExchange]:
    """A running exchange; parametrize indirectly with a dict of SimConfig overrides."""
    overrides = getattr(request, "param", {}) or {}
    async with SimExchange(config(**overrides)) as ex:
        yield ex


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client session."""
    async with aiohttp.ClientSession() as session:
        yield session


async def get_json(http: aiohttp.ClientSession, url: str, **params: Any) -> tuple[int, Any]:
    """GET and decode JSON; returns (status, body)."""
    async with http.get(url, params=params or None) as r:
        return r.status, orjson.loads(await r.read())


async def wait_for(cond: Callable[[], Any], timeout: float = 5.0, interval: float = 0.01) -> Any:
    """Poll ``cond`` until it returns something truthy, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


class WsClient:
    """A websockets client that keeps every decoded frame (raw frames that are not JSON go to ``garbage``)."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.frames: list[dict] = []
        self.raw: list[str] = []
        self.garbage: list[str] = []
        self._next_id = 0

    async def send(self, cmd: str, **params: Any) -> int:
        """Send a command; returns its id."""
        self._next_id += 1
        await self.ws.send(orjson.dumps({"id": self._next_id, "cmd": cmd, "params": params}).decode())
        return self._next_id

    async def recv(self, timeout: float = 5.0) -> dict | None:
        """Receive one frame (None if it was not JSON)."""
        data = await asyncio.wait_for(self.ws.recv(), timeout)
        self.raw.append(data)
        try:
            msg = orjson.loads(data)
        except orjson.JSONDecodeError:
            self.garbage.append(data)
            return None
        self.frames.append(msg)
        return msg

    async def until(self, pred: Callable[[dict], bool], timeout: float = 5.0) -> dict:
        """Receive frames until one satisfies ``pred``; returns it."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("expected frame not received in time")
            msg = await self.recv(remaining)
            if msg is not None and pred(msg):
                return msg

    async def reply(self, cmd_id: int, timeout: float = 5.0) -> dict:
        """Receive until the answer to command ``cmd_id``."""
        return await self.until(lambda m: m.get("id") == cmd_id, timeout)

    async def barrier(self, timeout: float = 5.0) -> None:
        """Receive everything queued before now (the reply to a list_subscriptions comes after it)."""
        await self.reply(await self.send("list_subscriptions"), timeout)

    def of_type(self, *types: str) -> list[dict]:
        """Frames of the given types, in arrival order."""
        return [m for m in self.frames if m.get("type") in types]


@pytest.fixture
async def ws_client(sim: SimExchange) -> AsyncIterator[WsClient]:
    """A connected WsClient on ``sim``."""
    async with websockets.connect(sim.ws_url, max_size=None) as ws:
        yield WsClient(ws)
