"""Round trip of `POST /sandbox/{id}/run` for `print(1)`, next to the same statement run by
an in-process interpreter (`exec` with stdout captured), as a ratio.

    python bench/bench_sandbox_api.py [-n 300]

Prints p50/p95/p99 and writes bench/results/sandbox_api.json.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _server import running_server

RESULTS = Path(__file__).resolve().parent / "results" / "sandbox_api.json"


def percentiles(values: list[float]) -> dict[str, float]:
    p50, p95, p99 = np.percentile(np.asarray(values), [50, 95, 99])
    return {"n": len(values), "p50": float(p50), "p95": float(p95), "p99": float(p99)}


def in_process(n: int) -> list[float]:
    namespace: dict[str, object] = {}
    code = compile("print(1)", "<bench>", "exec")
    out = []
    for _ in range(n):
        buffer = io.StringIO()
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(buffer):
            exec(code, namespace)
        out.append((time.perf_counter() - t0) * 1000.0)
        assert buffer.getvalue() == "1\n"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=300)
    args = parser.parse_args()
    with (
        running_server() as (base, token, _settings),
        httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60
        ) as client,
    ):
        sandbox = client.post("/sandbox").json()["sandbox_id"]
        client.post(f"/sandbox/{sandbox}/run", json={"code": "print(0)"})  # warm
        remote = []
        for _ in range(args.n):
            t0 = time.perf_counter()
            r = client.post(f"/sandbox/{sandbox}/run", json={"code": "print(1)"})
            remote.append((time.perf_counter() - t0) * 1000.0)
            assert r.json()["output"] == "1\n", r.text
        client.delete(f"/sandbox/{sandbox}")
    local = in_process(args.n)
    report = {
        "sandbox_run_ms": percentiles(remote),
        "in_process_ms": percentiles(local),
        "ratio_p50": percentiles(remote)["p50"] / percentiles(local)["p50"],
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2))
    for key in ("sandbox_run_ms", "in_process_ms"):
        row = report[key]
        print(f"{key:16} p50 {row['p50']:9.3f}  p95 {row['p95']:9.3f}  p99 {row['p99']:9.3f}")
    print(f"ratio (p50): {report['ratio_p50']:.0f}x   wrote {RESULTS}")


if __name__ == "__main__":
    main()
