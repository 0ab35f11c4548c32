"""One market, one subscription: every path that learns of a market places it once, and the router takes a market's
order-book frames only from the sid it is placed on (docs/gatherer.md "Placement")."""

from __future__ import annotations

import asyncio

import psycopg

from kalshictl.sim import SimConfig, SimExchange
from kalshictl.sim.ground_truth import load
from kalshictl.sim.markets import ACTIVE
from tests.gatherer.conftest import running_gatherer, until
from tests.gatherer.test_fidelity import sub_markets


def _holders(g, ticker: str) -> list[str]:
    return [s.name for s in g.shards.all_subs() if ticker in s.tickers]


async def test_a_market_learned_while_the_lifecycle_channel_was_blind_is_subscribed_once(gatherer_dsn: str) -> None:
    """Every connection kicked; a market is created (its ``created`` missed). The gatherer learns of it from the
    lifecycle window's re-anchor listing — which names it twice, as a cursor-paged listing of changing markets can —
    and from its ``activated`` and its own deltas. It ends on exactly one sid and every delta is stored once."""
    cfg = SimConfig(markets=30, seed=61, rate=0, paused=True)
    async with SimExchange(cfg) as ex, running_gatherer(gatherer_dsn, ex) as g:
        ex.faults.refuse_now(1.0)
        ex.drop_connections()
        (market,) = ex.activity.create_now(1)[:1]  # nobody is connected: every `created` is missed
        ex.set_faults("list_dup=1")  # every listed market named twice
        await until(lambda: market in sub_markets(ex), 30, "the listing's market subscribed")
        await until(lambda: market not in g.router.sync.awaiting, 15, "its first snapshot")
        idx = ex.universe.index_of(market)
        ex.universe.state(idx).status = ACTIVE
        ex.feed.lifecycle(market, "activated", ex.activity.clock.now_ms(), {"is_deactivated": False})
        for _ in range(40):  # its own frames
            ex.activity.delta_action(idx, ex.activity.clock.now_ms())
            await asyncio.sleep(0.002)
        await asyncio.sleep(1.0)
        ex.set_faults("")
        ex.flush()
        truth = [r for r in load(ex.ground_truth_path) if r["kind"] == "delta" and r["ticker"] == market]
        assert truth
        await until(lambda: g.writers.flush_all(5), 10, "writers flushed")
        assert sub_markets(ex).get(market) == 1, sub_markets(ex).get(market)
        assert len(_holders(g, market)) == 1, _holders(g, market)
    with psycopg.connect(gatherer_dsn) as c:
        rows = c.execute(
            "SELECT exchange_ts, side, price, size_delta, occurrence, count(*) FROM orderbook_deltas WHERE ticker = %s"
            " GROUP BY 1, 2, 3, 4, 5",
            (market,),
        ).fetchall()
    assert all(n == 1 for *_k, n in rows), rows
    assert sum(n for *_k, n in rows) == len(truth)


async def test_frames_from_a_sid_the_market_is_not_placed_on_are_dropped_and_the_stray_removed(
    gatherer_dsn: str,
) -> None:
    """The exchange delivers a market on a second sid (whatever put it there): its frames there are dropped and
    counted, the market is deleted from that sid, and each of its deltas is stored once, from its own sid."""
    cfg = SimConfig(markets=30, seed=62, rate=0, paused=True, repeat_subscribe="new_sid")
    async with SimExchange(cfg) as ex, running_gatherer(gatherer_dsn, ex) as g:
        market = sorted(g.shards.sub_of)[0]
        home = g.shards.sub_of[market]
        other = next(s for s in g.shards.all_subs() if s.conn is not home.conn and s.sid is not None)
        params = {"sids": [other.sid], "action": "add_markets", "market_tickers": [market]}
        assert await other.conn.send("update_subscription", params, "a stray add, not the placement's") is not None
        await until(lambda: g.router.stats.stray_frames >= 1, 10, "the stray snapshot dropped")
        await until(lambda: sub_markets(ex).get(market) == 1, 10, "the market deleted from the stray sid")
        idx = ex.universe.index_of(market)
        for _ in range(30):
            ex.activity.delta_action(idx, ex.activity.clock.now_ms())
            await asyncio.sleep(0.002)
        await asyncio.sleep(1.0)
        ex.flush()
        truth = [r for r in load(ex.ground_truth_path) if r["kind"] == "delta" and r["ticker"] == market]
        await until(lambda: g.writers.flush_all(5), 10, "writers flushed")
        assert g.metrics.stray_frames._value.get() >= 1
        assert _holders(g, market) == [home.name]
    with psycopg.connect(gatherer_dsn) as c:
        stored = c.execute("SELECT count(*), count(DISTINCT sid) FROM orderbook_deltas WHERE ticker = %s", (market,))
        n, sids = stored.fetchone()
    assert (n, sids) == (len(truth), 1)


async def test_a_paused_market_stays_subscribed_and_its_reactivation_loses_nothing(gatherer_dsn: str) -> None:
    """Kalshi's market lifecycle page: a paused (``inactive``) market becomes active again by ``activated``, which
    cancels its resting orders — deltas in the same millisecond as the news. A fault-free run loses none of them."""
    cfg = SimConfig(markets=30, seed=63, rate=0, paused=True)
    async with SimExchange(cfg) as ex, running_gatherer(gatherer_dsn, ex) as g:
        u = ex.universe
        idx = next(i for i in range(u.n_markets) if i not in u.busy_set and u.status(i) == ACTIVE)
        market = ex.universe.ticker(idx)
        for _ in range(20):  # resting orders for the reactivation to cancel
            ex.activity.delta_action(idx, ex.activity.clock.now_ms())
        paused = ex.activity.set_active_now(ex.universe.n_markets, False)
        assert market in paused
        await until(lambda: g.registry.status(market) == "inactive", 10, "the deactivation seen")
        assert market in g.shards.sub_of and sub_markets(ex).get(market) == 1  # still subscribed
        ex.activity.set_active_now(ex.universe.n_markets, True)
        await asyncio.sleep(1.0)
        ex.flush()
        truth = [r for r in load(ex.ground_truth_path) if r["kind"] == "delta" and r["ticker"] == market]
        await until(lambda: g.writers.flush_all(5), 10, "writers flushed")
    with psycopg.connect(gatherer_dsn) as c:
        n = c.execute("SELECT count(*) FROM orderbook_deltas WHERE ticker = %s", (market,)).fetchone()[0]
    assert n == len(truth) > 20


async def test_a_re_anchor_listing_is_validated_like_the_registry_s(gatherer_dsn: str) -> None:
    """Items of a lifecycle window's listing with a ticker the registry would refuse are skipped and counted."""
    from kalshictl.gatherer.gaps import Window

    cfg = SimConfig(markets=10, seed=64, rate=0, paused=True)
    async with SimExchange(cfg) as ex, running_gatherer(gatherer_dsn, ex) as g:
        bad = ["EVIL,X Y\n\u202e", "A" * 500, ""]
        now = ex.activity.clock.now_ms() * 1000
        w = Window("i", 1, "market_lifecycle_v2", "disconnect", from_ts=now, detected_at=now)
        g._on_listed_markets([{"ticker": t, "status": "active"} for t in bad] + [{"status": "active"}, "junk"], w)
        assert not any(t in g.registry or t in g.shards.sub_of for t in bad)
        assert sum(g.registry.rejected.values()) >= 5


async def test_a_market_learned_from_its_own_frames_and_the_listing_is_subscribed_once(gatherer_dsn: str) -> None:
    """Its ``created`` missed (every connection kicked), a market's frames arrive on one of the gatherer's sids before
    anything else names it (whatever put it there), and the re-anchor listing names it twice later: the frames are
    dropped and the market learned through the one placement; it ends on exactly one sid, each delta stored once."""
    cfg = SimConfig(markets=30, seed=65, rate=0, paused=True)
    async with SimExchange(cfg) as ex, running_gatherer(gatherer_dsn, ex) as g:
        g.backfill.settle_s = 6.0  # the listing comes well after the frames (the other order is the first test's)
        before = {c: c.generation for c in g.manager.connections}
        ex.faults.refuse_now(1.0)
        ex.drop_connections()
        market = ex.activity.create_now(1)[0]
        ex.set_faults("list_dup=1")

        def reconnected() -> bool:
            fresh = all(c.generation >= before[c] + 2 for c in g.manager.connections)
            return fresh and g.manager.healthy_count() == g.manager.target

        await until(reconnected, 20, "reconnected")
        sub = next(s for s in g.shards.all_subs() if s.sid is not None)
        params = {"sids": [sub.sid], "action": "add_markets", "market_tickers": [market]}
        assert await sub.conn.send("update_subscription", params, "not the placement's") is not None
        await until(lambda: market in g.shards.sub_of, 10, "the market learned from its own frames")
        assert g.router.stats.stray_frames >= 1
        await until(lambda: g.backfill.status()["anchored_markets"] > 0, 30, "the re-anchor listing")
        await until(lambda: market not in g.router.sync.awaiting, 30, "its first snapshot")
        await until(lambda: sub_markets(ex).get(market) == 1, 10, "one sid at the exchange")
        idx = ex.universe.index_of(market)
        ex.universe.state(idx).status = ACTIVE
        for _ in range(40):
            ex.activity.delta_action(idx, ex.activity.clock.now_ms())
            await asyncio.sleep(0.002)
        await asyncio.sleep(1.0)
        ex.set_faults("")
        ex.flush()
        truth = [r for r in load(ex.ground_truth_path) if r["kind"] == "delta" and r["ticker"] == market]
        await until(lambda: g.writers.flush_all(5), 10, "writers flushed")
        assert sub_markets(ex).get(market) == 1 and len(_holders(g, market)) == 1
    with psycopg.connect(gatherer_dsn) as c:
        n, sids = c.execute(
            "SELECT count(*), count(DISTINCT sid) FROM orderbook_deltas WHERE ticker = %s", (market,)
        ).fetchone()
    assert truth and (n, sids) == (len(truth), 1)
