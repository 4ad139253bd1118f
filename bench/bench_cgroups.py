"""What per-sandbox cgroups add to a sandbox's start and release (local adapter, no Ray).

    python bench/bench_cgroups.py [--creates 20]

For CERVER_CGROUPS=off and =auto: a sandbox made outside the warm pool, its first shell
``true`` (the supervisor starts: with cgroups, its cgroup is made, limited and joined
before exec), and its release (with cgroups, the cgroup is killed and removed). Also the
cgroup operations alone (make + limits, remove). Prints p50/p95 per operation and the
added cost; writes bench/results/cgroups.json. Needs root (or delegated cgroups).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from cerver.adapters.base import ExecRequest, SandboxSpec
from cerver.adapters.local import LocalAdapter, cgroups
from cerver.config import Settings

RESULTS = Path(__file__).parent / "results" / "cgroups.json"
SPEC = SandboxSpec(account_id="acct_bench")
TRUE = ExecRequest(code="true")


def summary(samples: list[float]) -> dict[str, float]:
    p50, p95 = np.percentile(np.array(samples), [50, 95])
    return {"n": len(samples), "p50_ms": float(p50), "p95_ms": float(p95)}


def settings_for(mode: str) -> Settings:
    home = Path(tempfile.mkdtemp(prefix="cerver-bench-")) / "home"
    home.mkdir()
    return Settings(
        home=home, database_url=f"sqlite:///{home / 'cerver.db'}", cgroups=mode,
        sandbox_pool_size=0,
    )  # fmt: skip


async def bench_mode(mode: str, creates: int, samples: dict[str, list[float]]) -> str:
    settings = settings_for(mode)
    adapter = LocalAdapter(settings)
    try:
        for _ in range(creates):
            t0 = time.perf_counter()
            record = await adapter.create_sandbox(SPEC)
            await adapter.run(record, TRUE)
            t1 = time.perf_counter()
            await adapter.delete_sandbox(record)
            t2 = time.perf_counter()
            samples["create_first_true"].append((t1 - t0) * 1000)
            samples["release"].append((t2 - t1) * 1000)
    finally:
        await adapter.close()
    return cgroups.probe(settings)[1]


def bench_ops(creates: int) -> dict[str, Any]:
    settings = settings_for("auto")
    backend, note = cgroups.probe(settings)
    if backend is None:
        return {"note": note}
    limits = cgroups.CgroupLimits(512 << 20, 128, 100_000)
    make, remove = [], []
    for i in range(creates * 5):
        t0 = time.perf_counter()
        cg = backend.create(f"sbx_bench{i}", limits)
        t1 = time.perf_counter()
        cg.remove()
        make.append((t1 - t0) * 1000)
        remove.append((time.perf_counter() - t1) * 1000)
    backend.remove_parents()
    return {"note": note, "make_and_limit": summary(make), "remove": summary(remove)}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--creates", type=int, default=20)
    args = parser.parse_args()
    samples = {m: {"create_first_true": [], "release": []} for m in ("off", "auto")}
    notes = {}
    for mode in ("off", "auto", "off", "auto"):  # interleaved: the machine is shared
        notes[mode] = await bench_mode(mode, args.creates // 2, samples[mode])
    results: dict[str, Any] = {"python": sys.version.split()[0], "notes": notes}
    for mode, ops in samples.items():
        results[f"cgroups_{mode}"] = {op: summary(v) for op, v in ops.items()}
    off, on = results["cgroups_off"], results["cgroups_auto"]
    results["added_p50_ms"] = {op: on[op]["p50_ms"] - off[op]["p50_ms"] for op in off}
    results["cgroup_ops"] = bench_ops(args.creates)
    print(json.dumps(results, indent=1))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
