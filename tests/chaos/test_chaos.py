"""`make chaos`: at least 20 random faults against the pipeline's processes (including exchange-side outages of every
gatherer, markets created and re-activated while the lifecycle channels are blind, and SIGKILLs during resnapshots);
zero lost without a record, zero duplicated, zero extra rows in any table, zero rebuilt books differing from the
exchange's, zero trades lost at all."""

import os
import shutil
from pathlib import Path

import pytest

from kalshictl.local.chaos import Chaos, ChaosOptions

# every reading of the exchange the docs leave open (docs/sim.md): ack seq own|last x repeat subscribe merge|new sid,
# get_snapshot replies consuming a seq or not
VARIANTS = [
    pytest.param({}, id="documented-defaults"),
    pytest.param({"ack-seq": "last", "repeat-subscribe": "new_sid"}, id="ack_last-new_sid"),
    pytest.param(
        {"ack-seq": "own", "repeat-subscribe": "new_sid", "snapshot-seq": "none"}, id="ack_own-new_sid-snap_none"
    ),
    pytest.param(
        {"ack-seq": "last", "repeat-subscribe": "merge", "snapshot-seq": "none"}, id="ack_last-merge-snap_none"
    ),
]


@pytest.mark.chaos
@pytest.mark.parametrize("variant", VARIANTS)
def test_chaos_nothing_lost_nothing_duplicated(request, variant):
    duration = float(os.environ.get("CHAOS_DURATION", "240"))
    # CHAOS_KEEP_DIR=DIR keeps a failed run's clusters (stopped), logs and ground truth in DIR/<variant> to diagnose
    keep = os.environ.get("CHAOS_KEEP_DIR")
    workdir = Path(keep) / request.node.callspec.id if keep else None
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
    chaos = Chaos(ChaosOptions(duration_s=duration, min_faults=20, exchange_variant=variant, workdir=workdir))
    result = chaos.run()
    if workdir is not None:
        if result.ok:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print("the failed run is kept in", workdir)
    totals = result.totals()
    print("\nCHAOS RESULT", {k: sum(f["kind"] == k for f in result.faults) for k in ChaosOptions().kinds})
    print(result.table())
    for t in result.tables:
        if not t.ok:
            print(t.table, "examples:", t.examples[:10])
    assert totals["faults_injected"] >= 20
    assert {f["kind"] for f in result.faults} == set(ChaosOptions().kinds)
    assert totals["lost_unrecorded"] == 0 and totals["duplicated"] == 0 and totals["extra"] == 0, totals
    assert result.books is not None and result.books_differing == 0, result.books
    trades = next(t for t in result.tables if t.table == "trades")
    assert trades.lost_recorded == 0 and trades.lost_unrecorded == 0, trades.as_dict()  # every trade came back
