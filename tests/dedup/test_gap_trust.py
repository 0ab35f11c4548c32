"""Gap-trust rule: identical deltas are kept once each; a gapped gatherer cannot add a shifted occurrence."""

from __future__ import annotations

import asyncio

from kalshictl.dedup.gaps import Peer
from kalshictl.dedup.loops import SyncLoop
from kalshictl.dedup.metrics import DedupMetrics
from kalshictl.schema import DELTAS
from tests.dedup.conftest import DedupEnv, delta_row, now_us, write_deltas, write_gap


async def test_gap_trust_rule(dedup_env: DedupEnv) -> None:
    t = now_us() - 60_000_000
    X, Y, Z, W = (
        ("A", t, True, 4000, 500),
        ("A", t + 5_000_000, False, 3000, -200),
        ("A", t + 10_000_000, True, 4100, 100),
        ("B", t, True, 4000, 500),
    )
    later = delta_row("A", t + 20_000_000, True, 1, 1, 0)

    def occ(group, k):
        return delta_row(*group, k)

    g1, g2, g3 = dedup_env.gatherers
    with g1.conn() as c:  # continuous: X twice, Z three times, W three times, no Y
        write_deltas(c, [occ(X, 0), occ(X, 1), occ(Z, 0), occ(Z, 1), occ(Z, 2), later])
        write_deltas(c, [occ(W, 0), occ(W, 1), occ(W, 2)])
    with g2.conn() as c:  # gap around X..Z with a replay: X counted three times (occ 2 never happened)
        write_gap(c, "gatherer-2", "A", t - 1000, t + 11_000_000)
        write_deltas(c, [occ(X, 0), occ(X, 1), occ(X, 2), occ(Y, 0), occ(Y, 1), occ(Z, 0), occ(Z, 1), later])
    with g3.conn() as c:  # gap for all tickers, missed messages: X once; also saw Y twice
        write_gap(c, "gatherer-3", None, t - 1000, None)
        write_deltas(c, [occ(X, 0), occ(Y, 0), occ(Y, 1)])

    s = dedup_env.settings()
    metrics = DedupMetrics()
    peers = {g.name: Peer(g, 2_000_000) for g in s.gatherers}
    loops = {
        g.name: SyncLoop(
            g, DELTAS, s.production, s.sync, metrics, asyncio.Event(), [p for n, p in peers.items() if n != g.name]
        )
        for g in s.gatherers
    }
    # the gapped gatherers merge FIRST: the witness is asked in its own database, not in production
    for name in ("gatherer-2", "gatherer-3", "gatherer-1"):
        await loops[name].step()
    with dedup_env.prod() as c:
        counts = dict(
            c.execute(
                "SELECT ticker || ':' || exchange_ts || ':' || price, count(*) FROM orderbook_deltas GROUP BY 1"
            ).fetchall()
        )
    assert counts[f"A:{X[1]}:4000"] == 2  # g2's occurrence 2 rejected (g1 is a continuous witness)
    assert counts[f"A:{Y[1]}:3000"] == 2  # no continuous witness for Y: the gapped copies are the best evidence
    assert counts[f"A:{Z[1]}:4100"] == 3
    assert counts[f"B:{W[1]}:4000"] == 3  # genuine identical deltas in one millisecond kept once each
    sample = metrics.registry.get_sample_value
    assert sample("kalshi_dedup_gap_trust_rows_total", {"gatherer": "gatherer-2", "decision": "rejected"}) == 1
    assert sample("kalshi_dedup_gap_trust_rows_total", {"gatherer": "gatherer-2", "decision": "unwitnessed"}) == 1
    for lp in loops.values():
        await lp.close_gatherer()
        await lp.close_production()
    for p in peers.values():
        await p.close()
