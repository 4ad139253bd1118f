"""Local adapter latency: sandbox creation (warm pool hit / miss), runs, create + first run.

    python bench/bench_local_adapter.py [--runs 200] [--creates 40]
    python bench/bench_local_adapter.py --modes bwrap --out /tmp/local_adapter.json

(An A/B of settings, e.g. cgroups and the disk budget on / off: bench_local_ab.py.)

Runs in both isolation modes (bwrap only where it is installed), as the current user.
Prints p50/p95/p99 per operation; writes bench/results/local_adapter.json.
Targets (bwrap): shell ``true`` p50 <= 3 ms; create from the pool p50 <= 2 ms;
create + first ``true`` from the pool p50 <= 5 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np

from cerver.adapters.base import ExecRequest, SandboxRecord, SandboxSpec
from cerver.adapters.local import LocalAdapter
from cerver.config import Settings

RESULTS = Path(__file__).parent / "results" / "local_adapter.json"
SPEC = SandboxSpec(account_id="acct_bench")
TRUE = ExecRequest(code="true")
PRINT = ExecRequest(code="print(1)", language="python")
TARGETS_MS = {"true": 3.0, "create_pool_hit": 2.0, "create_first_true_pool_hit": 5.0}


def summary(samples: list[float]) -> dict[str, float]:
    p50, p95, p99 = np.percentile(np.array(samples), [50, 95, 99])
    return {"n": len(samples), "p50_ms": p50, "p95_ms": p95, "p99_ms": p99}


async def timed(op: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = await op()
    return (time.perf_counter() - start) * 1000, value


async def wait_for_pool(adapter: LocalAdapter, size: int) -> None:
    deadline = time.monotonic() + 30
    while adapter.pool_size() < size:
        if time.monotonic() > deadline:
            raise RuntimeError("the warm pool did not fill within 30 s")
        await asyncio.sleep(0.005)


async def bench_mode(isolation: str, runs: int, creates: int) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="cerver-bench-")) / "home"
    home.mkdir()
    settings = Settings(
        home=home, database_url=f"sqlite:///{home / 'cerver.db'}", sandbox_isolation=isolation
    )
    adapter = LocalAdapter(settings)
    made: list[SandboxRecord] = []
    out: dict[str, Any] = {}
    try:
        samples: list[float] = []
        first_run_miss: list[float] = []
        for _ in range(creates):
            ms, record = await timed(lambda: adapter.create_sandbox(SPEC))
            samples.append(ms)
            run_ms, _ = await timed(lambda record=record: adapter.run(record, TRUE))
            first_run_miss.append(ms + run_ms)
            made.append(record)
        out["create_pool_miss"] = summary(samples)
        out["create_first_true_pool_miss"] = summary(first_run_miss)

        sandbox = made[0]
        for name, request in (("true", TRUE), ("print(1)", PRINT)):
            await adapter.run(sandbox, request)
            samples = []
            for _ in range(runs):
                ms, result = await timed(lambda request=request: adapter.run(sandbox, request))
                assert result.exit_code == 0, result.stderr
                samples.append(ms)
            out[name] = summary(samples)

        await adapter.warm(2)
        hits: list[float] = []
        firsts: list[float] = []
        for _ in range(creates):
            await wait_for_pool(adapter, 2)  # refill is background work: not timed
            ms, record = await timed(lambda: adapter.create_sandbox(SPEC))
            run_ms, result = await timed(lambda record=record: adapter.run(record, TRUE))
            assert result.exit_code == 0, result.stderr
            hits.append(ms)
            firsts.append(ms + run_ms)
            made.append(record)
        out["create_pool_hit"] = summary(hits)
        out["create_first_true_pool_hit"] = summary(firsts)
        out["isolation"] = made[-1].isolation
    finally:
        for record in made:
            await adapter.delete_sandbox(record)
        await adapter.close()
        shutil.rmtree(home.parent, ignore_errors=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--creates", type=int, default=40)
    parser.add_argument("--modes", nargs="+", choices=("bwrap", "rlimits"), default=None)
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSON goes")
    args = parser.parse_args()
    modes = args.modes or (["bwrap"] if shutil.which("bwrap") else []) + ["rlimits"]
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "kernel": platform.release(),
            "root": os.geteuid() == 0,
            "load_avg_before": os.getloadavg(),
        },
        "targets_ms_p50": TARGETS_MS,
        "modes": {},
    }
    for mode in modes:
        result = asyncio.run(bench_mode(mode, args.runs, args.creates))
        report["modes"][mode] = result
        print(f"\n{mode} (got {result.pop('isolation')})")
        for name, stats in result.items():
            target = TARGETS_MS.get(name)
            verdict = ""
            if target is not None and mode == "bwrap":
                verdict = f"  target {target} ms: {'ok' if stats['p50_ms'] <= target else 'MISSED'}"
            print(
                f"  {name:30s} p50 {stats['p50_ms']:7.2f}  p95 {stats['p95_ms']:7.2f}  "
                f"p99 {stats['p99_ms']:7.2f} ms  (n={stats['n']}){verdict}"
            )
    report["machine"]["load_avg_after"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=float) + "\n")
    print(f"\nwrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
