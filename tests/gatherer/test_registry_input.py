"""#15 items 5 and 9: bad GET /markets items are skipped and counted; a gatherer that cannot load its registry
retries with backoff and answers 503 with the reason meanwhile instead of exiting."""

from __future__ import annotations

import asyncio
import contextlib
import time

import httpx
import psycopg

from kalshictl.config import parse_settings
from kalshictl.db.embedded import free_port
from kalshictl.db.migrate import migrate
from kalshictl.gatherer.registry import MarketRegistry
from kalshictl.kalshi.rest import KalshiRest
from kalshictl.kalshi.validate import MAX_TICKER_LEN, ticker_problem
from tests.hostile_api import hostile_api

BAD_ITEMS = [
    "a string",
    7,
    None,
    ["list"],
    {"ticker": "X" * 5000, "status": "open"},
    {"ticker": "A,B", "status": "open"},
    {"ticker": "NUL\x00", "status": "open"},
    {"ticker": "TAB\tX", "status": "open"},
    {"ticker": "", "status": "open"},
    {"ticker": 12, "status": "open"},
    {"status": "open"},
]


def test_ticker_rule():
    assert ticker_problem("KXBTC-26JAN01-T100.5") is None
    assert ticker_problem("Y" * MAX_TICKER_LEN) is None
    for bad in ("", "Y" * (MAX_TICKER_LEN + 1), "A B", "A,B", "A\nB", "A\x00", None, 5):
        assert ticker_problem(bad) is not None, bad


async def test_non_object_and_bad_tickers_are_skipped_with_a_count():
    items = [{"ticker": "GOOD-1", "status": "open"}, *BAD_ITEMS, {"ticker": "GOOD-2", "status": ["not", "a", "str"]}]
    pages = {"/markets": {"markets": items, "cursor": ""}}
    async with hostile_api(pages) as url:
        rest = KalshiRest(url, requests_per_second=200)
        try:
            reg = MarketRegistry()
            assert await reg.load(rest, ["open"], mve=False) == 2  # one listing (no mve_filter=only pass)
        finally:
            await rest.close()
    assert reg.tickers() == ["GOOD-1", "GOOD-2"] and reg.status("GOOD-2") == "active"
    assert sum(reg.rejected.values()) == len(BAD_ITEMS)
    assert reg.rejected["not an object"] == 4


async def test_gatherer_retries_a_failed_registry_load_and_is_unhealthy_meanwhile(pg_cluster, fresh_db):
    with psycopg.connect(pg_cluster.dsn(fresh_db), autocommit=True) as conn:
        migrate(conn, "gatherer", flavor="partitioned")
    ok_after = 2  # a 503 (the REST client retries it) then a body that is no object fail the first load

    def markets(n: int):
        if n == 1:
            return 503, {"error": {"code": "service_unavailable", "message": "try later"}}
        if n == 2:
            return 200, ["not", "an", "object"]
        return 200, {"markets": [{"ticker": "M-1", "status": "open"}, "junk"], "cursor": ""}

    pages = {"/exchange/status": {"exchange_active": True, "trading_active": True}, "/markets": markets}
    from kalshictl.gatherer.service import Gatherer

    async with hostile_api(pages) as url:
        settings = parse_settings(
            {
                "gatherer": {
                    "database": {"dsn": pg_cluster.dsn(fresh_db)},
                    "exchange": {
                        "rest_url": url,
                        "ws_url": f"ws://127.0.0.1:{free_port()}/",
                        "timeout_s": 2,
                        "allow_insecure": True,  # the local hostile API
                    },
                    # one listing per load (no mve_filter=only pass): the counts below are per listing
                    "websocket": {"global_connections": 1, "orderbook_connections": 1, "record_mve": False},
                    "snapshot_poller": {"enabled": False},
                    "http": {"host": "127.0.0.1", "port": 0},
                    "market_status": ["open"],
                }
            },
            environ={},
        ).gatherer
        g = Gatherer(settings)
        task = asyncio.create_task(g.run())
        try:
            seen_503 = None
            deadline = time.monotonic() + 60
            async with httpx.AsyncClient(timeout=5) as client:
                while time.monotonic() < deadline and g.phase != "subscribe" and not task.done():
                    if g.health_url and g.phase == "load_markets":
                        resp = await client.get(g.health_url)
                        body = resp.json()
                        if resp.status_code == 503 and "reason" in body.get("details", {}):
                            seen_503 = body
                    await asyncio.sleep(0.05)
            assert not task.done(), "the gatherer exited instead of retrying"
            assert seen_503 is not None, "no 503 with a reason while the registry could not be loaded"
            assert seen_503["details"]["reason"].startswith("market registry not loaded:")
            assert seen_503["details"]["market_registry"]["error"]
            await _until(lambda: len(g.registry) == 1, 60, "the registry loaded on a retry")
            assert g.registry.load_attempts >= ok_after and g.registry.load_error is None
            assert g.registry.rejected["not an object"] == 1
        finally:
            g.request_stop()
            task.cancel()  # start() may still wait for WebSocket subscriptions (nothing listens there)
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 60)


async def _until(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
