"""Run every benchmark script in bench/ (``make bench``); each prints one summary line per figure."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    scripts = sorted(p for p in HERE.glob("bench_*.py"))
    failed = []
    for script in scripts:
        print(f"## {script.name}", flush=True)
        start = time.monotonic()
        proc = subprocess.run([sys.executable, str(script)], cwd=HERE.parent)
        print(f"## {script.name}: exit {proc.returncode} in {time.monotonic() - start:.1f}s\n", flush=True)
        if proc.returncode != 0:
            failed.append(script.name)
    if failed:
        print(f"invalid runs: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
