"""`make chaos`: at least 20 random faults against the pipeline's processes; zero missing, zero duplicated."""

import os

import pytest

from kalshictl.local.chaos import Chaos, ChaosOptions


@pytest.mark.chaos
def test_chaos_nothing_lost_nothing_duplicated(tmp_path):
    duration = float(os.environ.get("CHAOS_DURATION", "240"))
    chaos = Chaos(ChaosOptions(duration_s=duration, min_faults=20))
    result = chaos.run()
    totals = result.totals()
    print("\nCHAOS RESULT")
    for rep in result.tables:
        print("  ", rep.as_dict())
    print("  totals:", totals)
    assert totals["faults_injected"] >= 20
    assert totals["missing"] == 0 and totals["duplicated"] == 0 and totals["extra"] == 0, totals
