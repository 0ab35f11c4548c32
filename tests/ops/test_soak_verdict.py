"""The soak's verdict (kalshictl/local/soak.py): bounded tiers, a cold tier that never shrinks, nothing lost."""

from __future__ import annotations

from kalshictl.local.soak import DayRow, SoakOptions, SoakResult, render_days
from kalshictl.local.verify import TableReport

OPTS = SoakOptions(days=8, gatherer_keep_days=2, production_keep_days=2)


def _result(gatherer: list[int], production: list[int], cold: list[int], lost: int = 0, dup: int = 0) -> SoakResult:
    days = [DayRow(f"2027-01-{i + 1:02d}", gatherer_bytes=g, production_bytes=p, cold_bytes=c, exports_verified=5)
            for i, (g, p, c) in enumerate(zip(gatherer, production, cold, strict=True))]  # fmt: skip
    return SoakResult(days=days, tables=[TableReport("trades", emitted=10, stored=10, lost_unrecorded=lost,
                                                     duplicated=dup)])  # fmt: skip


def test_pass_when_tiers_stop_growing_and_nothing_is_lost():
    flat = [10, 20, 21, 20, 22, 21, 23, 23]
    verdict = _result(flat, flat, [1, 2, 3, 4, 5, 6, 7, 8]).verdict(OPTS)
    assert verdict["verdict"] == "pass" and verdict["days"] == 8 and verdict["missing"] == 0
    assert "2027-01-08" in render_days(_result(flat, flat, flat).days)


def test_fail_when_a_tier_keeps_growing_or_rows_are_missing_or_duplicated():
    flat, growing = [10, 20, 21, 20, 22, 21, 23, 23], [10, 20, 30, 40, 50, 60, 70, 80]
    cold = [1, 2, 3, 4, 5, 6, 7, 8]
    assert _result(growing, flat, cold).verdict(OPTS)["verdict"] == "fail"
    assert _result(flat, growing, cold).verdict(OPTS)["verdict"] == "fail"
    assert _result(flat, flat, [1, 2, 3, 2, 5, 6, 7, 8]).verdict(OPTS)["verdict"] == "fail"  # the cold tier shrank
    assert _result(flat, flat, cold, lost=1).verdict(OPTS)["verdict"] == "fail"
    assert _result(flat, flat, cold, dup=1).verdict(OPTS)["verdict"] == "fail"
    assert _result(flat[:6], flat[:6], cold[:6]).verdict(OPTS)["verdict"] == "fail"  # fewer than 7 days
