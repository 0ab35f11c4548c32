"""End to end, as processes: local exchange -> 3 gatherers -> deduplicator -> production == ground truth."""

import time

import psycopg
import pytest

from kalshictl.local.chaos import Chaos, ChaosOptions
from kalshictl.local.demo import Demo, DemoOptions
from kalshictl.local.verify import compare


@pytest.mark.slow
def test_clean_run_production_equals_ground_truth(tmp_path):
    demo = Demo(DemoOptions(markets=80, seed=21, rate=200))
    demo.check_every_book = True
    try:
        demo.setup()
        demo.start()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            state = demo.sample()
            assert all(s["status"] != "unhealthy" for s in state.services), state.services
            time.sleep(1.0)
        codes = demo.stop()
        # the busiest market's book rebuilt from production equals the exchange's own book
        assert demo.book_check is not None and demo.book_check["matches_exchange"], demo.book_check
        assert demo.book_check["deltas_applied"] > 0
        # and so does every market's: snapshots (anchored in the stream) + deltas reproduce the exchange exactly
        assert demo.books_check["checked"] > 20 and demo.books_check["mismatched"] == [], demo.books_check
        assert codes == {"gatherer-1": 0, "gatherer-2": 0, "gatherer-3": 0, "deduplicator": 0, "exchange": 0}
        pipe = demo.pipeline
        reports = compare(pipe.production_dsn(), demo.ground_truth, ["gatherer-1", "gatherer-2", "gatherer-3"])
        by_table = {r.table: r for r in reports}
        for rep in reports:
            assert rep.ok, rep.as_dict()
            assert rep.excused == 0 or rep.table == "orderbook_deltas", rep.as_dict()
        assert by_table["orderbook_deltas"].stored > 500
        assert by_table["trades"].stored > 50
        # every gatherer recorded the whole stream: each one's copy alone equals the truth for trades
        for i in range(3):
            with psycopg.connect(pipe.gatherer_admin_dsn(i)) as conn:
                n = conn.execute("SELECT count(DISTINCT trade_id) FROM trades").fetchone()[0]
            assert n == by_table["trades"].emitted
        with psycopg.connect(pipe.production_dsn()) as conn:
            markets = conn.execute("SELECT count(*) FROM markets").fetchone()[0]
        assert markets >= 80  # market metadata synced from REST
    finally:
        demo.close()


@pytest.mark.slow
def test_faults_slim_nothing_lost_nothing_duplicated(tmp_path):
    """A slimmer version of `make chaos`: one of each fault kind against real processes and databases."""
    chaos = Chaos(ChaosOptions(duration_s=30, min_faults=len(ChaosOptions().kinds), markets=60, rate=150, seed=5))
    result = chaos.run()
    print(result.table())
    assert len(result.faults) >= len(ChaosOptions().kinds)
    assert {f["kind"] for f in result.faults} == set(ChaosOptions().kinds)
    for rep in result.tables:
        assert rep.ok, rep.as_dict()
        assert rep.extra == 0 and rep.duplicated == 0, rep.as_dict()
    assert result.books is not None and result.books_differing == 0, result.books
    # the faults made the gatherers re-anchor tickers from REST listings, and rep.ok above includes that those rows
    # are at most one per market per 10 s and carry their listing's receive time (verify.check_rest_anchors)
    assert next(r for r in result.tables if r.table == "tickers").recovered > 0
    assert result.totals()["stored"] > 1000
