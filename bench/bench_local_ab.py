"""An interleaved A/B of the local adapter's per-sandbox settings: cold start and runs.

    python bench/bench_local_ab.py [--reps 5] [--creates 10] [--runs 50] \\
        --config on: --config off:cgroups=off,sandbox_disk_mb=0

Each ``--config NAME:SETTING=VALUE,...`` is one adapter (bwrap isolation, no warm pool) in
this process. The configs take turns, ``--reps`` rounds of: ``--creates`` cold starts
(create outside the pool + first shell ``true``: the supervisor and interpreter start),
then ``--runs`` back-to-back ``true`` and ``print(1)`` in one sandbox. Taking turns puts
every config under the same background load (this machine is shared), which a run per
config would not. Prints p50/p95 per config and operation, and the p50 of each round (the
spread says how much of a difference is noise); writes bench/results/local_ab.json.
For code A/B, run it twice with PYTHONPATH pointing at the two trees.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from cerver.adapters.base import ExecRequest, SandboxSpec
from cerver.adapters.local import LocalAdapter
from cerver.config import Settings

RESULTS = Path(__file__).parent / "results" / "local_ab.json"
SPEC = SandboxSpec(account_id="acct_bench")
TRUE = ExecRequest(code="true")
PRINT = ExecRequest(code="print(1)", language="python")
OPS = ("cold_start", "true", "print(1)")
# Also the CPU time of this process's event-loop thread per operation: what the adapter
# itself costs, which the neighbours' load inflates far less than the wall clock.
ALL_OPS = (*OPS, *(f"{op} loop_cpu" for op in OPS))


def config(text: str) -> tuple[str, dict[str, Any]]:
    name, _, rest = text.partition(":")
    values: dict[str, Any] = {}
    for pair in filter(None, rest.split(",")):
        key, _, raw = pair.partition("=")
        try:
            values[key] = json.loads(raw)
        except ValueError:
            values[key] = raw
    return name, values


def percentiles(samples: list[float]) -> dict[str, float]:
    p50, p95 = np.percentile(np.array(samples), [50, 95])
    return {"n": len(samples), "p50_ms": float(p50), "p95_ms": float(p95)}


async def one_round(adapter: LocalAdapter, creates: int, runs: int) -> dict[str, list[float]]:
    got: dict[str, list[float]] = {op: [] for op in ALL_OPS}
    for _ in range(creates):
        start, cpu = time.perf_counter(), time.thread_time()
        record = await adapter.create_sandbox(SPEC)
        result = await adapter.run(record, TRUE)
        got["cold_start"].append((time.perf_counter() - start) * 1000)
        got["cold_start loop_cpu"].append((time.thread_time() - cpu) * 1000)
        assert result.exit_code == 0, result.stderr
        await adapter.delete_sandbox(record)
        await asyncio.sleep(0.05)  # the release's background reaping is not the next start's
    record = await adapter.create_sandbox(SPEC)
    try:
        for op, request in (("true", TRUE), ("print(1)", PRINT)):
            await adapter.run(record, request)
            for _ in range(runs):
                start, cpu = time.perf_counter(), time.thread_time()
                result = await adapter.run(record, request)
                got[op].append((time.perf_counter() - start) * 1000)
                got[f"{op} loop_cpu"].append((time.thread_time() - cpu) * 1000)
                assert result.exit_code == 0, result.stderr
    finally:
        await adapter.delete_sandbox(record)
    return got


async def bench(configs: list[tuple[str, dict[str, Any]]], args: argparse.Namespace) -> dict:
    homes, adapters = [], {}
    for name, values in configs:
        home = Path(tempfile.mkdtemp(prefix="cerver-ab-")) / "home"
        home.mkdir()
        homes.append(home.parent)
        settings = Settings(
            home=home, database_url=f"sqlite:///{home / 'cerver.db'}",
            sandbox_isolation="bwrap", sandbox_pool_size=0, **values,
        )  # fmt: skip
        adapters[name] = LocalAdapter(settings)
    samples: dict[str, dict[str, list[float]]] = {n: {op: [] for op in ALL_OPS} for n in adapters}
    rounds: dict[str, dict[str, list[float]]] = {n: {op: [] for op in ALL_OPS} for n in adapters}
    try:
        for adapter in adapters.values():  # probes, imports: not timed
            await one_round(adapter, 1, 2)
        for _ in range(args.reps):
            for name, adapter in adapters.items():
                got = await one_round(adapter, args.creates, args.runs)
                for op, values in got.items():
                    samples[name][op] += values
                    rounds[name][op].append(float(np.percentile(values, 50)))
    finally:
        for adapter in adapters.values():
            await adapter.close()
        for home in homes:
            shutil.rmtree(home, ignore_errors=True)
    return {
        name: {
            op: {**percentiles(samples[name][op]), "round_p50s_ms": rounds[name][op]}
            for op in ALL_OPS
        }
        for name in adapters
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--creates", type=int, default=10)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument(
        "--config", type=config, action="append", default=[], metavar="NAME:KEY=VALUE,...",
        help="an adapter's Settings overrides (repeat for each side of the A/B)",
    )  # fmt: skip
    parser.add_argument("--label", default="", help="what this tree is (e.g. before / after)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if not shutil.which("bwrap"):
        sys.exit("bwrap is not installed: this bench compares bwrap sandboxes")
    configs = args.config or [("on", {}), ("off", {"cgroups": "off", "sandbox_disk_mb": 0})]
    load_before = os.getloadavg()
    results = asyncio.run(bench(configs, args))
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "label": args.label,
        "machine": {"cpus": os.cpu_count(), "load_avg_before": load_before,
                    "load_avg_after": os.getloadavg()},
        "reps": args.reps, "creates": args.creates, "runs": args.runs,
        "configs": {name: values for name, values in configs},
        "results": results,
    }  # fmt: skip
    print(f"{args.label or 'local adapter A/B'} (load {load_before[0]:.1f} -> "
          f"{report['machine']['load_avg_after'][0]:.1f})")  # fmt: skip
    for name, ops in results.items():
        for op, stats in ops.items():
            spread = " ".join(f"{v:.2f}" for v in stats["round_p50s_ms"])
            print(
                f"  {name:10s} {op:19s} p50 {stats['p50_ms']:7.2f}  p95 {stats['p95_ms']:7.2f} ms"
                f"  (n={stats['n']}; per round p50: {spread})"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
