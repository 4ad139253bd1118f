"""Gateway benchmarks: the recommender in-process, the Monte Carlo simulation on Ray.

    python bench/bench_gateway.py [--runs 20000000]

Prints percentiles and ratios; writes bench/results/gateway.json.
Targets: recommend p50 <= 2 ms for 10 providers; simulate >= 10 M samples/s via Ray tasks.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray

from cerver.adapters.catalog import ProviderProfile, all_profiles, get_profile
from cerver.gateway import RecommendRequest, recommend
from cerver.stress.kinds import KINDS
from cerver.stress.simulate import SimParams, draw_runs_python, simulate_tasks

RESULTS = Path(__file__).parent / "results" / "gateway.json"


def ten_providers() -> list[ProviderProfile]:
    base = all_profiles()
    extra = [p.model_copy(update={"name": f"{p.name}-2"}) for p in base[:2]]
    return base + extra


def bench_recommend(iterations: int) -> dict[str, Any]:
    profiles = ten_providers()
    assert len(profiles) == 10
    request = RecommendRequest.model_validate(
        {
            "workload": "preview",
            "requirements": {"runtime": "node", "package_install": True, "timeout_minutes": 20},
            "policy": {"mode": "balanced", "max_startup_ms": 5000},
        }
    )
    executable = {"local", "e2b"}
    for _ in range(200):
        recommend(request, profiles, executable)
    times = np.empty(iterations)
    for i in range(iterations):
        start = time.perf_counter_ns()
        recommend(request, profiles, executable)
        times[i] = (time.perf_counter_ns() - start) / 1e6
    p50, p95, p99 = np.percentile(times, [50, 95, 99])
    return {
        "providers": 10,
        "iterations": iterations,
        "p50_ms": p50,
        "p95_ms": p95,
        "p99_ms": p99,
        "target_p50_ms": 2.0,
        "meets_target": bool(p50 <= 2.0),
    }


def bench_simulate(runs: int, chunk: int, repeats: int) -> dict[str, Any]:
    kind = KINDS["code_exec"]  # one lognormal draw per run
    params = [SimParams.of(get_profile("e2b"), kind)]
    ray.get(simulate_tasks(params, 2 * chunk, seed=0, chunk=chunk))  # warm the workers
    rates = []
    for r in range(repeats):
        start = time.perf_counter()
        parts = ray.get(simulate_tasks(params, runs, seed=r, chunk=chunk))
        elapsed = time.perf_counter() - start
        assert sum(p.runs for p in parts) == runs
        rates.append(runs / elapsed)
    # the same draws in a plain Python loop, one process
    py_runs = 300_000
    start = time.perf_counter()
    draw_runs_python(params[0], py_runs, 0)
    py_rate = py_runs / (time.perf_counter() - start)
    best, median = max(rates), float(np.median(rates))
    # preview_launch: 3 draws per run
    preview = [SimParams.of(get_profile("e2b"), KINDS["preview_launch"])]
    start = time.perf_counter()
    ray.get(simulate_tasks(preview, runs // 3, seed=9, chunk=chunk))
    preview_rate = (runs // 3) / (time.perf_counter() - start)
    return {
        "kind": "code_exec",
        "runs": runs,
        "chunk": chunk,
        "repeats": repeats,
        "samples_per_s_median": median,
        "samples_per_s_best": best,
        "python_loop_samples_per_s": py_rate,
        "ratio_vs_python_loop": median / py_rate,
        "preview_launch_runs_per_s": preview_rate,
        "preview_launch_draws_per_s": 3 * preview_rate,
        "target_samples_per_s": 10_000_000,
        "meets_target": bool(median >= 10_000_000),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20_000_000)
    parser.add_argument("--chunk", type=int, default=2_500_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=5000)
    args = parser.parse_args()

    rec = bench_recommend(args.iterations)
    print(
        f"recommend (10 providers, in-process): p50 {rec['p50_ms']:.3f} ms  "
        f"p95 {rec['p95_ms']:.3f} ms  p99 {rec['p99_ms']:.3f} ms  "
        f"target p50 <= 2 ms: {'ok' if rec['meets_target'] else 'MISSED'}"
    )

    ray.init(num_cpus=os.cpu_count() or 2, include_dashboard=False, log_to_driver=False)
    try:
        sim = bench_simulate(args.runs, args.chunk, args.repeats)
    finally:
        ray.shutdown()
    print(
        f"simulate ({sim['runs']:,} runs on Ray, {os.cpu_count()} CPUs): "
        f"median {sim['samples_per_s_median'] / 1e6:.1f} M samples/s "
        f"(best {sim['samples_per_s_best'] / 1e6:.1f} M/s); plain Python loop "
        f"{sim['python_loop_samples_per_s'] / 1e6:.2f} M/s; "
        f"ratio x{sim['ratio_vs_python_loop']:.0f}; "
        f"target >= 10 M/s: {'ok' if sim['meets_target'] else 'MISSED'}"
    )
    print(
        f"preview_launch (3 draws/run): {sim['preview_launch_runs_per_s'] / 1e6:.1f} M runs/s = "
        f"{sim['preview_launch_draws_per_s'] / 1e6:.1f} M draws/s"
    )

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "ray": ray.__version__,
                    "numpy": np.__version__,
                },
                "recommend": rec,
                "simulate": sim,
                "at": time.time(),
            },
            indent=2,
            default=float,
        )
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
