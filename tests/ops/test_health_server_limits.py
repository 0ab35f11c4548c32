"""The /health listener bounds what a client can hold: a header-read timeout, a connection limit, a header size
limit, and one log line (no traceback) per refused request."""

from __future__ import annotations

import asyncio
import logging
import time

import httpx

from kalshictl.health.server import HealthServer
from kalshictl.health.thresholds import HealthReport

HALF_SENT = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: "


async def _healthy() -> HealthReport:
    return HealthReport("healthy")


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    try:
        while await asyncio.wait_for(reader.read(4096), seconds):
            pass
        return True  # EOF: the server closed it
    except (TimeoutError, ConnectionError):
        return False


async def test_half_sent_requests_are_closed_after_the_header_timeout_and_the_server_still_answers():
    server = HealthServer("127.0.0.1", 0, _healthy, header_timeout_s=1.0, max_connections=1000)
    await server.start()
    try:
        conns = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(400)]
        for _, writer in conns:
            writer.write(HALF_SENT)
        start = time.monotonic()
        closed = await asyncio.gather(*(_closed_within(reader, 15.0) for reader, _ in conns))
        assert all(closed), f"{closed.count(False)} of 400 half-sent requests still open"
        assert time.monotonic() - start < 15.0
        async with httpx.AsyncClient() as client:
            assert (await client.get(server.url + "/health")).status_code == 200
        for _, writer in conns:
            writer.close()
    finally:
        await server.stop()


async def test_connections_beyond_the_limit_are_refused_at_once():
    server = HealthServer("127.0.0.1", 0, _healthy, header_timeout_s=30.0, max_connections=20)
    await server.start()
    try:
        held = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(20)]
        for _, writer in held:
            writer.write(HALF_SENT)
        await asyncio.sleep(0)  # nothing to wait for: the next connection is refused when it is accepted
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert await _closed_within(reader, 5.0), "a connection beyond the limit was kept"
        for _, w in held:
            w.close()
        writer.close()
    finally:
        await server.stop()


async def test_an_oversized_header_is_refused_with_one_log_line(caplog):
    server = HealthServer("127.0.0.1", 0, _healthy)
    await server.start()
    try:
        caplog.set_level(logging.DEBUG)
        async with httpx.AsyncClient() as client:
            for _ in range(3):
                resp = await client.get(server.url + "/health", headers={"X-Big": "a" * 20_000})
                assert resp.status_code in (400, 431)
            assert (await client.get(server.url + "/health")).status_code == 200
        records = [r for r in caplog.records if r.levelno >= logging.INFO and not r.name.startswith("httpx")]
        assert len(records) == 3, [r.getMessage() for r in records]
        for record in records:
            assert record.exc_info is None and record.exc_text is None
            assert "\n" not in record.getMessage() and "a" * 100 not in record.getMessage()
    finally:
        await server.stop()


async def test_only_the_three_routes_answer():
    server = HealthServer("127.0.0.1", 0, _healthy)
    await server.start()
    try:
        async with httpx.AsyncClient() as client:
            assert (await client.get(server.url + "/health")).json() == {"status": "healthy", "components": {}}
            assert (await client.get(server.url + "/metrics")).status_code == 200
            assert (await client.get(server.url + "/status")).status_code == 404  # no status function
            assert (await client.get(server.url + "/nope")).status_code == 404
            assert (await client.post(server.url + "/health")).status_code == 405
    finally:
        await server.stop()
