"""Time to interactive, measured the way ComputeSDK's public sandbox leaderboard does.

One sample: create a sandbox (here a `node` session on the `local` provider), then run
`node -v` until it succeeds; the time from the create call to that first successful
answer is the time to interactive (TTI). Three modes, as theirs:
  - sequential: one sample after the other (n);
  - staggered: a new sample every 200 ms, overlapping (n);
  - burst: all n at once (and how long until every one was done).
The top and bottom 5% of each mode's samples are dropped before the median and p95; the
success rate counts every sample (a failed create or a failed `node -v` is a failure).
Starts a real Cerver in-process (Ray + Serve + SQLite) and calls it over HTTP on loopback.
Prints a table beside the leaderboard's published medians (theirs, not measured here) and
writes bench/results/tti.json (``--out`` for another file).

Each mode also prints where its time went (issue 16, burst): every create's and first
run's ``Server-Timing`` phases (p50 / p95 / mean / summed over samples; ``http`` is the
client's latency minus the server's ``app``), when the calls ended, the session hosts
started, and the CPU each class of process burned while it ran (``_cpu.py``: Serve, the
session hosts, Ray, the sandboxes, this client, and the machine's other users).

    python bench/bench_tti.py             # n=100 per mode
    python bench/bench_tti.py -n 20       # smaller, for a smoke check
    python bench/bench_tti.py --modes burst -n 100
    python bench/bench_tti.py --set sandbox_pool_max=0   # a server setting, for an A/B
    python bench/bench_tti.py --modes burst --out bench/results/tti_burst.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cpu import CpuSampler
from _server import running_server

from cerver.serve_app.timing import parse as parse_server_timing

RESULTS = Path(__file__).resolve().parent / "results" / "tti.json"
CREATE = {"compute": {"provider": "local"}, "runtime": "node"}
COMMAND = {"code": "node -v", "language": "shell"}
MODES = ("sequential", "staggered", "burst")
TRIM = 0.05
# Their published medians (ComputeSDK leaderboard, time to interactive), as reference only:
# measured by them on their infrastructure, never by this script.
LEADERBOARD_MEDIAN_S = {"daytona": 0.11, "e2b": 0.44}


def trimmed(values: list[float]) -> dict[str, Any]:
    """Median, p95 and mean after dropping the top and bottom 5% (ComputeSDK's method)."""
    ordered = sorted(values)
    cut = int(len(ordered) * TRIM)
    kept = ordered[cut : len(ordered) - cut] if cut else ordered
    if not kept:
        return {"n": 0}
    arr = np.asarray(kept, dtype=float)
    p50, p95 = np.percentile(arr, [50, 95])
    return {
        "n": len(values),
        "kept": len(kept),
        "median_ms": round(float(p50), 1),
        "p95_ms": round(float(p95), 1),
        "mean_ms": round(float(arr.mean()), 1),
        "min_ms": round(float(arr.min()), 1),
        "max_ms": round(float(arr.max()), 1),
    }


@dataclass
class Sample:
    """One create -> `node -v`: when each call ended (from the mode's start) and where its
    time went (the server's `Server-Timing` phases, plus `http`: the client's latency
    minus the server's `app`)."""

    tti_ms: float | None = None
    create_done_s: float | None = None
    run_done_s: float | None = None
    create: dict[str, float] = field(default_factory=dict)
    run: dict[str, float] = field(default_factory=dict)


def phases(response: httpx.Response, client_ms: float) -> dict[str, float]:
    """The response's `Server-Timing` phases (ms), with `client` and `http` added."""
    out: dict[str, float] = {"client": client_ms}
    out.update(parse_server_timing(response.headers.get("server-timing", "")))
    if "app" in out:
        out["http"] = client_ms - out["app"]
    return out


async def one_sample(
    client: httpx.AsyncClient, made: list[str], failures: Counter[str], t0: float
) -> Sample:
    """Create, then `node -v` until it answers; ``tti_ms`` None when either fails (counted
    by why)."""
    sample = Sample()
    started = time.perf_counter()
    r = await client.post("/v2/sessions", json=CREATE)
    created = time.perf_counter()
    sample.create_done_s = created - t0
    sample.create = phases(r, (created - started) * 1000.0)
    if r.status_code != 201:
        failures[f"create {r.status_code} {_code(r)}: {_message(r)}"] += 1
        return sample
    sid = r.json()["session_id"]
    made.append(sid)
    r = await client.post(f"/v2/sessions/{sid}/run", json=COMMAND)
    ran = time.perf_counter()
    sample.run_done_s = ran - t0
    sample.run = phases(r, (ran - created) * 1000.0)
    if r.status_code != 200:
        failures[f"run {r.status_code} {_code(r)}: {_message(r)}"] += 1
        return sample
    body = r.json()
    if body.get("exit_code") != 0 or not body.get("stdout", "").startswith("v"):
        failures[f"node -v exit {body.get('exit_code')}: {body.get('stderr', '')[:200]}"] += 1
        return sample
    sample.tti_ms = (ran - started) * 1000.0
    return sample


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])[:300]
    except (ValueError, KeyError, TypeError):
        return response.text[:300]


def breakdown(samples: list[Sample]) -> dict[str, Any]:
    """Per call (create, run): every phase's p50 / p95 / mean over the samples that have
    it, and its total (ms summed over samples); and when the calls ended (s from the
    mode's start)."""
    out: dict[str, Any] = {}
    for call in ("create", "run"):
        names: dict[str, list[float]] = {}
        for sample in samples:
            for name, ms in getattr(sample, call).items():
                names.setdefault(name, []).append(ms)
        out[call] = {
            name: {
                "n": len(values),
                "p50": round(float(np.percentile(values, 50)), 2),
                "p95": round(float(np.percentile(values, 95)), 2),
                "mean": round(float(np.mean(values)), 2),
                "total": round(float(np.sum(values)), 1),
            }
            for name, values in names.items()
        }
    for label, attr in (("creates_done_s", "create_done_s"), ("runs_done_s", "run_done_s")):
        ends = [getattr(s, attr) for s in samples if getattr(s, attr) is not None]
        if ends:
            p0, p50, p95, p100 = np.percentile(ends, [0, 50, 95, 100])
            out[label] = {
                "first": round(float(p0), 3), "p50": round(float(p50), 3),
                "p95": round(float(p95), 3), "last": round(float(p100), 3),
            }  # fmt: skip
    return out


def _code(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return "?"


async def close_all(client: httpx.AsyncClient, ids: list[str]) -> None:
    for i in range(0, len(ids), 20):
        await asyncio.gather(*(client.delete(f"/v2/sessions/{s}") for s in ids[i : i + 20]))
    ids.clear()


async def run_mode(
    client: httpx.AsyncClient, mode: str, n: int, stagger_s: float
) -> dict[str, Any]:
    made: list[str] = []
    failures: Counter[str] = Counter()
    load_before = os.getloadavg()[0]
    hosts_before = await directory_stats()
    with CpuSampler() as cpu:
        started = time.perf_counter()
        if mode == "sequential":
            samples = [await one_sample(client, made, failures, started) for _ in range(n)]
        elif mode == "staggered":
            tasks = []
            for _ in range(n):
                tasks.append(asyncio.create_task(one_sample(client, made, failures, started)))
                await asyncio.sleep(stagger_s)
            samples = list(await asyncio.gather(*tasks))
        else:
            burst = (one_sample(client, made, failures, started) for _ in range(n))
            samples = list(await asyncio.gather(*burst))
        wall_ms = (time.perf_counter() - started) * 1000.0
    hosts_after = await directory_stats()
    await close_all(client, made)
    ok = [s.tti_ms for s in samples if s.tti_ms is not None]
    row = trimmed(ok) | {
        "success_rate": round(len(ok) / n, 4),
        "failures": dict(failures),
        "all_done_ms": round(wall_ms, 1),
        "load_average_1m": round(load_before, 2),
        "load_average_1m_after": round(os.getloadavg()[0], 2),
        "breakdown_ms": breakdown(samples),
        "cpu": cpu.report(),
        "session_hosts": {"before": hosts_before, "after": hosts_after},
    }
    return row


async def directory_stats() -> dict[str, Any]:
    """Session hosts (all, empty, started so far) from the session directory."""
    import ray

    directory = ray.get_actor("cerver-session-directory", namespace="cerver-bench")
    stats = await directory.stats.remote()
    return {k: stats[k] for k in ("hosts", "empty_hosts", "created_total")}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    # Room for every sample of a mode at once (the default per-account caps are lower).
    room = max(args.n + 10, 500)
    overrides = {
        "max_live_sessions": room,
        "max_live_sessions_per_account": room,
        "max_computes_per_account": room,
        "max_open_sessions_per_account": room * 4,
        "max_concurrent_runs_per_account": room,
    } | dict(args.set)
    with running_server(**overrides) as (base, token, settings):
        headers = {"Authorization": f"Bearer {token}"}
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(
            base_url=base, headers=headers, timeout=120, limits=limits
        ) as client:
            report: dict[str, Any] = {
                "method": "ComputeSDK time to interactive: create -> first successful "
                "`node -v`; top and bottom 5% dropped; success rate over all samples",
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "platform": platform.platform(),
                },
                "settings": {
                    name: getattr(settings, name)
                    for name in (
                        "session_pool_size",
                        "session_pool_max",
                        "sessions_per_host",
                        "sandbox_pool_size",
                        "sandbox_pool_max",
                    )
                }
                | overrides,
                "leaderboard_median_s_theirs": LEADERBOARD_MEDIAN_S,
                "modes": {},
            }
            for mode in args.modes:
                await asyncio.sleep(args.settle)  # pools refill between modes
                report["modes"][mode] = await run_mode(client, mode, args.n, args.stagger_ms / 1000)
    return report


def setting(text: str) -> tuple[str, Any]:
    name, _, value = text.partition("=")
    try:
        return name, json.loads(value)
    except ValueError:
        return name, value


def print_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Time to interactive: create -> first `node -v` (ComputeSDK method)")
    for col in ("mode", "median", "p95", "success", "all done", "load 1m"):
        table.add_column(col)
    for mode, row in report["modes"].items():
        table.add_row(
            f"cerver local, {mode}",
            f"{row.get('median_ms', '-')} ms",
            f"{row.get('p95_ms', '-')} ms",
            f"{row['success_rate']:.0%}",
            f"{row['all_done_ms']} ms",
            str(row["load_average_1m"]),
        )
    for name, median_s in LEADERBOARD_MEDIAN_S.items():
        table.add_row(
            f"{name} (THEIR published median, not measured here)",
            f"{median_s * 1000:.0f} ms",
            "",
            "",
            "",
            "",
        )
    Console().print(table)
    for mode, row in report["modes"].items():
        print_breakdown(mode, row)


def print_breakdown(mode: str, row: dict[str, Any]) -> None:
    """Where the mode's time went: each call's phases, when calls ended, the CPU."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    parts = row["breakdown_ms"]
    table = Table(title=f"{mode}: where each call's time went (Server-Timing, ms)")
    for col in ("call", "phase", "p50", "p95", "mean", "sum over samples"):
        table.add_column(col)
    for call in ("create", "run"):
        for name, stats in parts.get(call, {}).items():
            table.add_row(call, name, *(str(stats[k]) for k in ("p50", "p95", "mean", "total")))
    console.print(table)
    for label in ("creates_done_s", "runs_done_s"):
        if label in parts:
            console.print(f"  {label}: {parts[label]}")
    cpu = row["cpu"]
    table = Table(
        title=f"{mode}: CPU while it ran ({cpu['wall_s']} s wall, {cpu['machine_cores']} "
        f"cores, busy {cpu['machine_busy_cores_avg']} cores on average)"
    )
    for col in ("processes", "CPU s", "cores (avg)"):
        table.add_column(col)
    for label, seconds in cpu["by_class_cpu_s"].items():
        table.add_row(label, str(seconds), str(cpu["by_class_cores_avg"][label]))
    table.add_row("unattributed (ended unseen)", str(cpu["unattributed_cpu_s"]), "")
    console.print(table)
    console.print(f"  session hosts: {row['session_hosts']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=100, help="samples per mode")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--stagger-ms", type=float, default=200.0)
    parser.add_argument("--settle", type=float, default=3.0, help="seconds between modes")
    parser.add_argument("--quick", action="store_true", help="n=10 (smoke check)")
    parser.add_argument("--out", default=str(RESULTS), help="where the JSON goes")
    parser.add_argument(
        "--set", type=setting, action="append", default=[], metavar="NAME=VALUE",
        help="a server setting for this run (A/B), e.g. --set sandbox_pool_max=0",
    )  # fmt: skip
    args = parser.parse_args()
    if args.quick:
        args.n = 10
    report = asyncio.run(main_async(args))
    out = Path(args.out)
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print_table(report)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
