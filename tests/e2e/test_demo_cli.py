"""The README's first command, through the real CLI: `kalshictl demo --json` runs the pipeline and proves it."""

import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_demo_cli_summary_matches_the_exchange():
    proc = subprocess.run(
        [sys.executable, "-m", "kalshictl", "demo", "--markets", "40", "--duration", "8", "--rate", "150", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["exit_codes"] == {
        "gatherer-1": 0,
        "gatherer-2": 0,
        "gatherer-3": 0,
        "deduplicator": 0,
        "exchange": 0,
    }
    tables = {t["table"]: t for t in summary["tables"]}
    for table in ("trades", "orderbook_deltas", "tickers", "lifecycle_events"):
        assert tables[table]["exchange_emitted"] == tables[table]["production_rows"] > 0, tables[table]
        # the split `make chaos` reports: nothing lost without a record, nothing duplicated or never emitted
        assert tables[table]["lost_unrecorded"] == tables[table]["duplicated_or_extra"] == 0, tables[table]
    assert summary["book"]["matches_exchange"] is True
    assert summary["books"]["checked"] > 5 and summary["books"]["mismatched"] == []
