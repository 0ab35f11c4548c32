"""One WebSocket client: an ordered send queue drained by a writer task, plus the server's heartbeat pings."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any

from aiohttp import WSMsgType, web

from kalshictl.sim.stats import Stats
from kalshictl.sim.subscriptions import Sub

OVERFLOW_FRAME = b'{"id":0,"type":"error","msg":{"code":25,"msg":"Subscription buffer overflow"}}'


class Connection:
    """Frames are queued synchronously by the exchange (keeping order) and written by :meth:`run_writer`."""

    def __init__(self, cid: int, ws: web.WebSocketResponse, transport: Any, buffer_bytes: int, stats: Stats) -> None:
        self.cid = cid
        self.ws = ws
        self.transport = transport
        self.buffer_bytes = buffer_bytes
        self.stats = stats
        self.queue: deque[bytes] = deque()
        self.queued_bytes = 0
        self.wake = asyncio.Event()
        self.closed = False
        self.next_sid = 1
        self.subs: dict[int, Sub] = {}  # sid -> subscription
        self.by_channel: dict[str, list[Sub]] = {}  # one sid per channel unless repeat_subscribe=new_sid

    def send(self, frame: bytes) -> None:
        """Queue one text frame (dropped silently once the connection is closed)."""
        if self.closed:
            return
        self.queue.append(frame)
        self.queued_bytes += len(frame)
        if self.queued_bytes > self.buffer_bytes:
            self.stats.buffer_overflows += 1
            self.queue.clear()
            self.queue.append(OVERFLOW_FRAME)
            self.queued_bytes = 0
            self.closed = True  # the writer sends the error, then closes
        self.wake.set()

    def abort(self) -> None:
        """Drop the connection abruptly (no close frame), as a network failure would."""
        self.closed = True
        self.queue.clear()
        self.queued_bytes = 0
        if self.transport is not None:
            self.transport.abort()
        self.wake.set()

    async def run_writer(self) -> None:
        """Drain the queue to the socket until the connection closes."""
        ws = self.ws
        q = self.queue
        try:
            while True:
                await self.wake.wait()
                self.wake.clear()
                while q:
                    frame = q.popleft()
                    self.queued_bytes -= len(frame)
                    await ws.send_frame(frame, WSMsgType.TEXT)
                if self.closed:
                    break
        except (ConnectionError, RuntimeError, asyncio.CancelledError):
            pass
        finally:
            self.closed = True
            with contextlib.suppress(Exception):
                await ws.close()

    async def run_heartbeat(self, interval: float) -> None:
        """Ping with payload ``heartbeat`` every ``interval`` seconds."""
        with contextlib.suppress(ConnectionError, RuntimeError, asyncio.CancelledError):
            while not self.closed:
                await asyncio.sleep(interval)
                if self.closed:
                    break
                await self.ws.ping(b"heartbeat")
                self.stats.pings += 1
