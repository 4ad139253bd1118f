"""Session benchmarks after the method of the public sandbox leaderboards.

Starts a real Cerver in-process (Ray + Serve + SQLite, `local` provider) and measures over
HTTP on loopback:
  - time to first command (create a session, then `true` done): sequential, staggered
    (one every 200 ms), burst (all at once); p50/p95/p99 and success rate;
  - exec round trip of `true` (shell) and `print(1)` (python), sequential and 5-way parallel;
  - gateway overhead: client-observed latency minus the sandbox's own measured run time;
  - hibernate and wake: N sessions each run one command and go idle; live host processes and
    resident memory before, at peak and after they hibernate; then wake-and-run latency.
Prints a table and writes bench/results/sessions.json.

    python bench/bench_sessions.py            # full run (~10 minutes on 2 cores)
    python bench/bench_sessions.py --quick    # smaller counts, for a smoke check
    python bench/bench_sessions.py --only hibernate --sessions 10000   # idle sessions on one node
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _server import running_server

RESULTS = Path(__file__).resolve().parent / "results" / "sessions.json"
CREATE = {"compute": {"provider": "local"}}
PARTS = ("ttfc", "exec", "hibernate")


def pct(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return {"n": 0}
    p50, p95, p99 = np.percentile(arr, [50, 95, 99])
    return {
        "n": int(arr.size),
        "p50": round(float(p50), 2),
        "p95": round(float(p95), 2),
        "p99": round(float(p99), 2),
        "mean": round(float(arr.mean()), 2),
    }


async def first_command(
    client: httpx.AsyncClient, cleanup: list[str], failures: Counter[str] | None = None
) -> float | None:
    """Create, then `true`: the milliseconds, or None (its reason counted in ``failures``)."""
    failures = Counter() if failures is None else failures
    started = time.perf_counter()
    r = await client.post("/v2/sessions", json=CREATE)
    if r.status_code != 201:
        failures[f"create {r.status_code} {_error(r)}"] += 1
        return None
    sid = r.json()["session_id"]
    cleanup.append(sid)
    r = await client.post(f"/v2/sessions/{sid}/run", json={"code": "true"})
    if r.status_code != 200:
        failures[f"run {r.status_code} {_error(r)}"] += 1
        return None
    if r.json()["exit_code"] != 0:
        failures[f"run exit {r.json()['exit_code']}: {r.json().get('stderr', '')[:200]}"] += 1
        return None
    return (time.perf_counter() - started) * 1000.0


def _error(response: httpx.Response) -> str:
    """The error's code and message, for a failure's reason."""
    try:
        error = response.json()["error"]
        return f"{error['code']}: {str(error['message'])[:300]}"
    except (ValueError, KeyError, TypeError):
        return response.text[:300]


async def close_all(client: httpx.AsyncClient, ids: list[str]) -> None:
    for i in range(0, len(ids), 20):
        await asyncio.gather(*(client.delete(f"/v2/sessions/{s}") for s in ids[i : i + 20]))
    ids.clear()


async def ttfc(client: httpx.AsyncClient, n: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    ids: list[str] = []
    # sequential
    seq = [await first_command(client, ids) for _ in range(n)]
    await close_all(client, ids)
    out["sequential"] = pct([v for v in seq if v is not None]) | {
        "success_rate": sum(v is not None for v in seq) / n
    }
    # staggered: one every 200 ms, overlapping
    tasks = []
    for _ in range(n):
        tasks.append(asyncio.create_task(first_command(client, ids)))
        await asyncio.sleep(0.2)
    stag = await asyncio.gather(*tasks)
    await close_all(client, ids)
    out["staggered_200ms"] = pct([v for v in stag if v is not None]) | {
        "success_rate": sum(v is not None for v in stag) / n
    }
    # burst: all at once
    failures: Counter[str] = Counter()
    started = time.perf_counter()
    burst = await asyncio.gather(*(first_command(client, ids, failures) for _ in range(n)))
    wall = (time.perf_counter() - started) * 1000.0
    await close_all(client, ids)
    out["burst"] = pct([v for v in burst if v is not None]) | {
        "success_rate": sum(v is not None for v in burst) / n,
        "all_done_ms": round(wall, 1),
        "failures": dict(failures),
    }
    return out


async def exec_round_trips(client: httpx.AsyncClient, n: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, runtime, code in (("true", "shell", "true"), ("print(1)", "python", "print(1)")):
        sid = (await client.post("/v2/sessions", json=CREATE | {"runtime": runtime})).json()[
            "session_id"
        ]
        await client.post(f"/v2/sessions/{sid}/run", json={"code": code})  # warm
        client_ms: list[float] = []
        overhead: list[float] = []
        for _ in range(n):
            t0 = time.perf_counter()
            r = await client.post(f"/v2/sessions/{sid}/run", json={"code": code})
            ms = (time.perf_counter() - t0) * 1000.0
            client_ms.append(ms)
            overhead.append(ms - r.json()["duration_ms"])
        parallel: list[float] = []

        for _ in range(n // 5):
            parallel += await asyncio.gather(*(_timed_run(client, sid, code) for _ in range(5)))
        out[label] = {
            "sequential": pct(client_ms),
            "parallel_5": pct(parallel),
            "gateway_overhead": pct(overhead),
        }
        await client.delete(f"/v2/sessions/{sid}")
    return out


async def _timed_run(client: httpx.AsyncClient, sid: str, code: str) -> float:
    t0 = time.perf_counter()
    await client.post(f"/v2/sessions/{sid}/run", json={"code": code})
    return (time.perf_counter() - t0) * 1000.0


async def hibernate_and_wake(
    client: httpx.AsyncClient, settings: Any, args: argparse.Namespace
) -> dict[str, Any]:
    """N sessions each run one command and go idle; every one must hibernate (the store says
    so last, no process of it is left); what N hibernated sessions cost; wake-and-run."""
    from _hibernation import hibernation_run

    return await hibernation_run(client, settings, args)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    # Room for every session of the run in one account: hibernated sessions keep their
    # computes (files) and count as open; a burst runs n commands at once.
    room = max(5000, args.sessions + 100, args.n + 10)
    overrides = {
        "hibernate_after_s": args.hibernate_after,
        "max_live_sessions": 5000,
        "max_live_sessions_per_account": 5000,
        "max_computes_per_account": room,
        "max_open_sessions_per_account": room,
        "max_concurrent_runs_per_account": room,
        "session_pool_size": 2,
    }
    with running_server(**overrides) as (base, token, settings):
        headers = {"Authorization": f"Bearer {token}"}
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(
            base_url=base, headers=headers, timeout=120, limits=limits
        ) as client:
            report: dict[str, Any] = {
                "machine": {
                    "cpus": __import__("os").cpu_count(),
                    "python": platform.python_version(),
                    "platform": platform.platform(),
                },
                "settings": overrides | {"sessions_per_host": settings.sessions_per_host},
            }
            report["load_average_1m"] = round(__import__("os").getloadavg()[0], 2)
            if "ttfc" in args.only:
                report["time_to_first_command_ms"] = await ttfc(client, args.n)
            if "exec" in args.only:
                report["exec_round_trip_ms"] = await exec_round_trips(client, args.exec_n)
            if "hibernate" in args.only:
                report["hibernate_and_wake"] = await hibernate_and_wake(client, settings, args)
    return report


def print_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Cerver sessions (ms unless noted)")
    for col in ("measure", "p50", "p95", "p99", "note"):
        table.add_column(col)
    for mode, row in report.get("time_to_first_command_ms", {}).items():
        note = f"success {row.get('success_rate', 0):.0%}"
        if "all_done_ms" in row:
            note += f", all done in {row['all_done_ms']} ms"
        table.add_row(f"time to first command, {mode}", *_p(row), note)
    for label, rows in report.get("exec_round_trip_ms", {}).items():
        for mode, row in rows.items():
            table.add_row(f"exec `{label}`, {mode}", *_p(row), "")
    hw = report.get("hibernate_and_wake")
    if hw is None:
        Console().print(table)
        return
    wake = hw["wake"]
    table.add_row("wake and run", *_p(wake["wake_and_run_ms"]), f"of {hw['sessions']} sessions")
    table.add_row("then, awake", *_p(wake["then_awake_run_ms"]), "")
    Console().print(table)
    made, hib = hw["made"], hw["hibernation"]
    Console().print(
        f"made {made['made']} in {made['seconds']} s ({made['per_second']}/s), errors "
        f"{made['errors']}; CPU ms per session {hw['create_cpu']['cpu_ms_per_session_by_kind']}"
        f" (others on the machine: {hw['create_cpu']['others_cpu_s']} s)\n"
        f"hibernated: {hib}\nper hibernated session: {hw['per_hibernated_session']}\n"
        f"wake phases p50: {wake['phases_p50_ms']}"
    )


def _p(row: dict[str, Any]) -> list[str]:
    return [str(row.get(k, "-")) for k in ("p50", "p95", "p99")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts (smoke check)")
    parser.add_argument("-n", type=int, default=100, help="samples per time-to-first-command mode")
    parser.add_argument("--exec-n", type=int, default=300)
    parser.add_argument(
        "--sessions", type=int, default=2000, help="idle sessions to hibernate (try 10000)"
    )
    parser.add_argument("--create-concurrency", type=int, default=10)
    parser.add_argument(
        "--only", nargs="+", choices=PARTS, default=list(PARTS), help="measure only these"
    )
    parser.add_argument("--wake-samples", type=int, default=50)
    parser.add_argument("--hibernate-after", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=16, help="which sessions the wake samples")
    parser.add_argument(
        "--max-create-s", type=float, default=3600.0,
        help="stop making sessions after this long and go on with those made",
    )  # fmt: skip
    parser.add_argument("--checkpoint-every", type=int, default=1000, help="census every N made")
    args = parser.parse_args()
    if args.quick:
        args.n, args.exec_n, args.sessions, args.wake_samples = 10, 30, 60, 10
    report = asyncio.run(main_async(args))
    # A hibernation-only run has a file per N (the 10,000 run must not overwrite the others).
    out = RESULTS
    if args.only == ["hibernate"]:
        out = RESULTS.with_name(f"hibernation_{args.sessions}.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print_table(report)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
