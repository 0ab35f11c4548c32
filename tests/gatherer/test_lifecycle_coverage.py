"""Lifecycle keeps the recorded set current; startup and command errors fail fast or retry, never loop (#12, #16)."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import psycopg
import pytest

from kalshictl.gatherer.service import ApiKeyRejected, Gatherer
from kalshictl.sim import SimConfig, SimExchange
from kalshictl.sim.ground_truth import load
from tests.gatherer.conftest import make_settings, running_gatherer, until
from tests.gatherer.test_fidelity import sim_config, sub_markets

SIM_FIELDS = {f.name for f in dataclasses.fields(SimConfig)}


async def test_created_markets_are_subscribed_within_5s_and_closed_ones_leave(gatherer_dsn: str) -> None:
    cfg = SimConfig(markets=40, seed=41, rate=300, paused=True, create_share=0.05, lifecycle_share=0.05)
    async with SimExchange(cfg) as ex, running_gatherer(gatherer_dsn, ex) as g:
        start = time.monotonic()
        ex.resume()
        await asyncio.sleep(3.0)  # workload: markets are created, activated, deactivated, settled
        ex.pause()
        ex.flush()
        events = [r for r in load(ex.ground_truth_path) if r["kind"] == "lifecycle"]
        created = {r["ticker"] for r in events if r["event_type"] == "created"}
        assert created, "the run created no markets"
        last: dict[str, str] = {}
        for r in events:
            if r["event_type"] in ("created", "activated", "deactivated", "settled", "finalized"):
                last[r["ticker"]] = r["event_type"]
        live = ("created", "activated", "deactivated")  # a paused market stays subscribed: it can reopen any moment
        wanted = {t for t, ev in last.items() if ev in live}
        gone = {t for t, ev in last.items() if ev not in live}
        # the last market was created at most 3 s ago: 5 s after its creation it must be at the exchange
        deadline = 5.0 - (time.monotonic() - start - 3.0)
        await until(lambda: wanted <= set(sub_markets(ex)), max(0.5, deadline), "created markets subscribed")
        await until(lambda: not (gone & set(sub_markets(ex))), 5, "settled markets unsubscribed")
        status = await g.status()
    assert gone, "the run settled no markets"
    assert status["coverage"]["unplaced"] == 0
    assert not (gone & set(g.shards.sub_of)), "slots of closed markets were not freed"


async def test_registry_refresh_places_markets_the_channel_missed(gatherer_dsn: str) -> None:
    """Markets created while the lifecycle connection is away are found by GET /markets?min_updated_ts=…"""
    cfg = SimConfig(markets=30, seed=42, rate=300, paused=True, create_share=0.1)
    async with SimExchange(cfg) as ex, running_gatherer(gatherer_dsn, ex) as g:
        g.router.channels.on_lifecycle = None  # the lifecycle channel "misses" everything from now on
        ex.resume()
        await asyncio.sleep(1.5)
        ex.pause()
        ex.flush()
        born = {r["ticker"]: r["exchange_ts"] for r in load(ex.ground_truth_path) if r.get("event_type") == "created"}
        created = set(born)
        assert created and not (created & set(g.shards.sub_of))
        joined, _left = await g.refresh_registry()
        assert joined >= len(created)
        await until(lambda: created <= set(sub_markets(ex)), 10, "refreshed markets subscribed")
        # their books from creation until the first snapshot were never this gatherer's: an outage window says so
        await g.writers.flush_all(10)
        await g.gaplog.flush(10)
    with psycopg.connect(gatherer_dsn) as c:
        windows = c.execute(
            "SELECT unnest(tickers), min(from_ts) FROM sequence_gaps WHERE reason = 'outage' GROUP BY 1"
        ).fetchall()
    covered = dict(windows)
    late = {t: (born[t], covered.get(t)) for t in created if covered.get(t) is None or covered[t] > born[t]}
    assert not late, f"markets placed by the refresh without a window from their creation: {late}"


async def test_multivariate_markets_are_recorded(gatherer_dsn: str) -> None:
    cfg = sim_config(markets=60, seed=43, rate=0, paused=True, mve_share=0.3)
    async with SimExchange(cfg) as ex, running_gatherer(gatherer_dsn, ex, all_subscribed=False) as g:
        mve = {t for t in g.registry.tickers() if t.startswith("KXMVE")}
        assert mve
        await until(lambda: mve <= set(sub_markets(ex)), 15, "MVE books subscribed")
        st = g.router.states[g.manager.global_conns[0]]
        channels = {ch for s in g.router.states.values() for ch in s.channel_sid}
        assert "multivariate_market_lifecycle" in channels, st.channel_sid


async def test_rejected_api_key_fails_fast_with_exit_code_2(gatherer_dsn: str, tmp_path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    def pem() -> tuple[bytes, bytes]:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        private = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        public = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return private, public

    _, exchange_public = pem()
    ours, _ = pem()  # a key the exchange does not know
    (tmp_path / "key.pem").write_bytes(ours)
    async with SimExchange(SimConfig(markets=5, seed=44, rate=0, paused=True, public_key=exchange_public)) as ex:
        s = make_settings(gatherer_dsn, ex.rest_url, ex.ws_url)
        s.exchange.api_key_id = "kid"
        s.exchange.private_key = f"file:{tmp_path / 'key.pem'}"  # type: ignore[assignment]
        g = Gatherer(s, progress=False)
        t0 = time.monotonic()
        with pytest.raises(ApiKeyRejected) as info:
            await asyncio.wait_for(g.run(), 30)
        assert time.monotonic() - t0 < 10
    assert info.value.exit_code == 2
    assert "rejected the API key (HTTP 401)" in str(info.value)
    assert g.manager is None  # no WebSocket reconnect loop was ever started


async def test_command_timeouts_on_subscribe_are_retried(gatherer_dsn: str) -> None:
    from kalshictl.sim import faults

    if "cmd_timeout" not in faults.ALL_FAULTS:
        pytest.skip("the sim has no cmd_timeout fault")
    cfg = SimConfig(markets=80, seed=45, rate=0, paused=True, faults="cmd_timeout=0.5")
    async with SimExchange(cfg) as ex:
        ws = {"markets_per_subscription": 10, "subscriptions_per_connection": 4, "subscribe_retries": 10}
        async with running_gatherer(gatherer_dsn, ex, websocket=ws, all_subscribed=False) as g:
            wanted = set(g.registry.recordable())
            await until(lambda: set(sub_markets(ex)) == wanted, 30, "every market subscribed despite error 18")
            samples = [s for m in g.metrics.messages.collect() for s in m.samples if s.name.endswith("_total")]
            errors = sum(s.value for s in samples if s.labels == {"type": "error"})
            assert errors > 0, "the fault never fired"


def test_shipped_config_covers_the_seeds_425000_markets() -> None:
    from pathlib import Path

    from kalshictl.config import load_settings

    path = Path(__file__).resolve().parents[2] / "deploy" / "config" / "gatherer.yaml"
    w = load_settings(path, environ={}).gatherer.websocket  # type: ignore[union-attr]
    assert (w.global_connections, w.orderbook_connections) == (6, 144)
    assert w.capacity >= 425_000


async def test_markets_hidden_by_a_lifecycle_window_are_recorded_before_shutdown(gatherer_dsn: str) -> None:
    """A market re-activated while the lifecycle channel was blind is unknown to the gatherer until the window's
    re-anchor listing names it. Until then the coverage heartbeat stays at the window's start (so a kill -9 leaves a
    restart window over it), and a graceful shutdown lists it first: its book is recorded lost from the window's
    start (an ``outage`` window naming it), not silently. A market active only inside the window (settled before the
    listing) is recorded lost over the window."""
    import psycopg

    from kalshictl.sim.markets import FINALIZED

    cfg = SimConfig(markets=20, seed=46, rate=0, paused=True)
    async with SimExchange(cfg) as ex, running_gatherer(gatherer_dsn, ex) as g:
        market, brief = sorted(g.shards.sub_of)[:2]
        g.router.remove_markets([market, brief])  # the gatherer saw them deactivated ...
        await until(lambda: not {market, brief} & set(sub_markets(ex)), 10, "markets unsubscribed")
        start = time.time_ns() // 1000
        # ... then its lifecycle connection was away while the exchange re-activated one, and re-activated and
        # settled the other
        wid = g.gaplog.open(channel="market_lifecycle_v2", reason="disconnect", from_ts=start)
        assert g.gaplog.committed_through_us(time.time_ns() // 1000) <= start  # the heartbeat waits while blind
        ex.universe.state(ex.universe.index_of(market)).updated_ts = start // 1_000_000 + 1
        paused = ex.universe.state(ex.universe.index_of(brief))
        paused.status, paused.updated_ts = FINALIZED, start // 1_000_000 + 1
        g.gaplog.close(wid, time.time_ns() // 1000)
        assert g.gaplog.committed_through_us(time.time_ns() // 1000) <= start  # ... and until it is listed
        # leaving the block stops the gatherer at once: the backfill worker has not listed the window's markets yet
    with psycopg.connect(gatherer_dsn) as c:
        for ticker in (market, brief):
            windows = c.execute(
                "SELECT from_ts, to_ts FROM sequence_gaps WHERE channel = 'orderbook_delta' AND reason = 'outage'"
                " AND %s = ANY(tickers)",
                (ticker,),
            ).fetchall()
            assert windows and windows[0][0] <= start, (ticker, windows)
            if ticker == brief:
                assert windows[0][1] is not None and windows[0][1] > start  # over the whole window


async def test_lifecycle_window_listing_finds_multivariate_markets_left_out_of_the_default_listing(
    gatherer_dsn: str,
) -> None:
    """Kalshi's docs name ``mve_filter`` but not its default. Where the default listing leaves ``KXMVE…`` markets
    out, a lifecycle window's re-anchor listing asks for them on their own, so a multivariate market re-activated
    while the channel was blind is found and recorded."""
    cfg = SimConfig(markets=40, seed=47, rate=0, paused=True, mve_share=0.5, mve_listing="exclude")
    async with SimExchange(cfg) as ex, running_gatherer(gatherer_dsn, ex, all_subscribed=False) as g:
        assert not g.registry.mve_in_default
        market = sorted(t for t in g.shards.sub_of if t.startswith("KXMVE"))[0]
        g.router.remove_markets([market])  # seen deactivated, then re-activated while the channel was blind
        await until(lambda: market not in set(sub_markets(ex)), 10, "market unsubscribed")
        start = time.time_ns() // 1000
        wid = g.gaplog.open(channel="multivariate_market_lifecycle", reason="disconnect", from_ts=start)
        ex.universe.state(ex.universe.index_of(market)).updated_ts = start // 1_000_000 + 1
        g.gaplog.close(wid, time.time_ns() // 1000)
        await until(lambda: market in set(sub_markets(ex)), 15, "the listing found the multivariate market")
