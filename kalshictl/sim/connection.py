"""One WebSocket client: an ordered send queue drained by a writer task, plus the server's heartbeat pings; and the
registry of one server's open clients (:class:`Connections`, the exchange's and the replay's)."""

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

    def finish(self) -> None:
        """Close once the queue has drained: the writer sends what is queued, then closes."""
        self.closed = True
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


class Connections:
    """One server's open WebSocket clients by id (ids count from 1 in order of arrival)."""

    def __init__(self) -> None:
        self._by_cid: dict[int, Connection] = {}
        self._last_cid = 0

    def open(self, ws: web.WebSocketResponse, transport: Any, buffer_bytes: int, stats: Stats) -> Connection:
        """Register a new client."""
        self._last_cid += 1
        conn = self._by_cid[self._last_cid] = Connection(self._last_cid, ws, transport, buffer_bytes, stats)
        return conn

    def forget(self, conn: Connection) -> None:
        """The client is gone."""
        self._by_cid.pop(conn.cid, None)

    def __len__(self) -> int:
        return len(self._by_cid)

    def all(self) -> list[Connection]:
        """Every registered client in id order (also those closing)."""
        return list(self._by_cid.values())

    def live(self) -> list[Connection]:
        """The clients not closed, in id order."""
        return [c for c in self._by_cid.values() if not c.closed]

    def abort_all(self) -> int:
        """Drop every live client abruptly; returns how many."""
        live = self.live()
        for conn in live:
            conn.abort()
        return len(live)

    def finish_all(self) -> None:
        """Close every client once its queue has drained."""
        for conn in self.all():
            conn.finish()

    async def shutdown(self) -> None:
        """The server stops: close every client now (code 1001)."""
        conns = self.all()
        for conn in conns:
            conn.finish()
        await asyncio.gather(
            *(c.ws.close(code=1001, message=b"server shutdown") for c in conns), return_exceptions=True
        )
