"""Compact gap windows: a run with frame drops writes at most one gap row per subscription per gap
(not one per market), and every market of a window is named in it."""

from __future__ import annotations

import asyncio
from collections import Counter

import psycopg

from kalshictl.sim import SimConfig, SimExchange
from tests.gatherer.conftest import probe_all, running_gatherer, until


async def test_frame_drops_write_one_row_per_subscription_per_gap(gatherer_dsn: str, tmp_path) -> None:
    markets = 240
    cfg = SimConfig(markets=markets, seed=9, rate=600, paused=True, ground_truth=tmp_path / "gt.jsonl")
    async with SimExchange(cfg) as ex, running_gatherer(gatherer_dsn, ex) as g:
        per_sub = {sub.name: len(sub.tickers) for sub in g.shards.all_subs()}
        ex.set_faults("skip_seq=0.01")
        ex.resume()
        # the workload with frame drops (not a sync wait); markets created and settled meanwhile join and leave
        # the subscriptions, so each one's size is sampled throughout
        end = asyncio.get_running_loop().time() + 6.0
        while asyncio.get_running_loop().time() < end:
            for sub in g.shards.all_subs():
                per_sub[sub.name] = max(per_sub.get(sub.name, 0), len(sub.tickers))
            await asyncio.sleep(0.02)
        ex.set_faults("")
        ex.pause()
        await probe_all(g)
        await until(lambda: not g.router.sync.awaiting, 20, "every market to resync")
        await g.gaplog.flush(5)
        skipped = ex.stats()["faults"].get("skip_seq", 0)
        for sub in g.shards.all_subs():  # markets created during the run joined the subscriptions
            per_sub[sub.name] = max(per_sub.get(sub.name, 0), len(sub.tickers))
    with psycopg.connect(gatherer_dsn) as conn:
        rows = conn.execute(
            "SELECT subscription, expected_seq, received_seq, cardinality(tickers), to_ts FROM sequence_gaps"
            " WHERE channel = 'orderbook_delta' AND reason IN ('seq_gap', 'seq_backwards')"
        ).fetchall()
    print(f"{skipped} frames dropped over {len(per_sub)} subscriptions -> {len(rows)} gap rows")
    assert skipped > 10 and rows
    per_gap = Counter((sub, exp, rcv) for sub, exp, rcv, _n, _to in rows)
    assert max(per_gap.values()) == 1, per_gap.most_common(3)  # one row per subscription per gap
    assert len(rows) <= skipped  # a dropped frame opens at most one window (fewer when windows overlap)
    assert all(to is not None for *_x, to in rows)  # every window closed once its markets resynced
    # a window names the markets it covers: at most its subscription's, and not one row per market
    sizes = [(sub, n) for sub, _e, _r, n, _t in rows]
    assert all(1 <= n <= per_sub[sub] for sub, n in sizes), (sizes, per_sub)
    assert sum(n for *_x, n, _t in rows) > len(rows)
