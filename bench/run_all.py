"""Run every benchmark in turn (`make bench`); each prints its table and writes its JSON to
bench/results/. Extra arguments go to bench_sessions.py (e.g. --quick; that one also goes to
bench_side_by_side.py, bench_breakdown.py and bench_tti.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = [
    "bench_local_adapter.py",
    "bench_sandbox_api.py",
    "bench_gateway.py",
    "bench_breakdown.py",  # issue 16 (perfpath): where a run's milliseconds go
    "bench_sessions.py",
    "bench_tti.py",
    "bench_e2b.py",
    "bench_vercel.py",
    "bench_daytona.py",
    "bench_llm.py",
    "bench_llm_breakdown.py",
    "bench_side_by_side.py",
    "bench_relay.py",
    "bench_dashboard.py",
]


def main() -> int:
    failed = []
    for script in SCRIPTS:
        print(f"\n=== {script} ===", flush=True)
        extra = sys.argv[1:] if script == "bench_sessions.py" else []
        quick_too = ("bench_side_by_side.py", "bench_breakdown.py", "bench_tti.py")
        if script in quick_too:  # --quick: smaller counts there too
            extra = [a for a in sys.argv[1:] if a == "--quick"]
        if subprocess.run([sys.executable, str(HERE / script), *extra]).returncode != 0:
            failed.append(script)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
