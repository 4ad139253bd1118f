"""Where each millisecond of ``POST /v2/sessions/:id/run`` goes, per Serve front door, A/B in
one run.

For each configuration (alternated ``--rounds`` times, each in a fresh child process with
its own Ray + Serve + SQLite, `local` provider) it measures over HTTP on loopback:
  - sequential runs of ``true``: the client's latency, the gateway overhead (latency minus
    the run's own ``duration_ms``) and the server's ``Server-Timing`` phases: auth,
    session+admit (the store read of the session row and the account-limits actor's slot,
    at once), route (finding the session's host), actor (the host call's round trip outside
    the host), sandbox (the adapter's run), commit (the transcript append), host (the rest
    inside the host); ``http`` = client latency - ``app`` (the proxy hop, uvicorn, the client),
    ``respond`` = ``app`` - the phases (FastAPI, validation, JSON);
  - ``GET /healthz`` (the HTTP hop alone);
  - runs/s of ``echo`` from 16 clients over 8 sessions, and the errors.
Prints one table per measure with the configurations side by side, the load average with
every figure, and writes bench/results/breakdown.json.

    python bench/bench_breakdown.py                      # haproxy vs proxy, 1 round
    python bench/bench_breakdown.py --quick              # small counts (smoke check)
    python bench/bench_breakdown.py --configs haproxy,haproxy-throughput --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sessions import pct  # p50/p95/p99/mean, as the session bench reports them

from cerver.serve_app.timing import parse as parse_server_timing

HERE = Path(__file__).resolve().parent

RESULTS = HERE / "results" / "breakdown.json"
CREATE = {"compute": {"provider": "local"}}
PHASES = (
    "auth",
    "session+admit",
    "route",
    "actor",
    "sandbox",
    "commit",
    "host",
    "respond",
    "http",
)

# name -> (environment for the child, Settings overrides)
CONFIGS: dict[str, tuple[dict[str, str], dict[str, Any]]] = {
    "haproxy": ({}, {"serve_haproxy": True}),
    "proxy": ({}, {"serve_haproxy": False}),
    "haproxy-throughput": ({"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}, {"serve_haproxy": True}),
    "proxy-throughput": ({"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}, {"serve_haproxy": False}),
    # HAProxy's threads (Ray's default is 4, on any machine)
    "haproxy-1thread": ({"RAY_SERVE_HAPROXY_NBTHREAD": "1"}, {"serve_haproxy": True}),
    "haproxy-2threads": ({"RAY_SERVE_HAPROXY_NBTHREAD": "2"}, {"serve_haproxy": True}),
    "haproxy-no-timing": ({}, {"serve_haproxy": True, "server_timing": False}),
    # Parts of the throughput-optimized mode, one at a time: the app's code on the replica's
    # own event loop (not a loop in a thread of its own), and buffered request logs.
    "haproxy-oneloop": (
        {
            "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
            "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
        },
        {"serve_haproxy": True},
    ),
    "haproxy-logbuffer": (
        {"RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1000"},
        {"serve_haproxy": True},
    ),
}
TARGETS = {"overhead_p50": 2.0, "overhead_p95": 5.0, "true_p50": 5.0, "runs_per_s": 400.0}


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# --- the child: one server, one configuration -------------------------------------------
def sequential(client: httpx.Client, sid: str, n: int) -> dict[str, Any]:
    client_ms: list[float] = []
    overhead: list[float] = []
    phases: dict[str, list[float]] = {p: [] for p in (*PHASES, "app")}
    for _ in range(n):
        t0 = time.perf_counter()
        r = client.post(f"/v2/sessions/{sid}/run", json={"code": "true"})
        ms = (time.perf_counter() - t0) * 1000.0
        r.raise_for_status()
        client_ms.append(ms)
        overhead.append(ms - r.json()["duration_ms"])
        timing = parse_server_timing(r.headers.get("server-timing", ""))
        if "app" not in timing:
            continue
        known = sum(v for k, v in timing.items() if k != "app")
        timing["respond"] = timing["app"] - known
        timing["http"] = ms - timing["app"]
        for name in phases:
            phases[name].append(timing.get(name, 0.0))
    return {
        "client": pct(client_ms),
        "overhead": pct(overhead),
        "phases": {name: pct(values) for name, values in phases.items()},
    }


def healthz(client: httpx.Client, n: int) -> dict[str, Any]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        client.get("/healthz").raise_for_status()
        times.append((time.perf_counter() - t0) * 1000.0)
    return pct(times)


async def throughput(base: str, token: str, runs: int, clients: int, sessions: int) -> dict:
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(
        base_url=base, headers=headers, timeout=60, limits=limits
    ) as client:
        ids = []
        for _ in range(sessions):
            r = await client.post("/v2/sessions", json=CREATE)
            r.raise_for_status()
            ids.append(r.json()["session_id"])
        await asyncio.gather(
            *(client.post(f"/v2/sessions/{s}/run", json={"code": "true"}) for s in ids)
        )
        errors: list[str] = []
        latencies: list[float] = []
        per_client = runs // clients

        async def worker(i: int) -> None:
            sid = ids[i % sessions]
            for _ in range(per_client):
                t0 = time.perf_counter()
                try:
                    r = await client.post(f"/v2/sessions/{sid}/run", json={"code": "echo hi"})
                    ok = r.status_code == 200 and r.json().get("stdout") == "hi\n"
                    if not ok:
                        errors.append(f"{r.status_code} {r.text[:200]}")
                except httpx.HTTPError as exc:
                    errors.append(repr(exc))
                latencies.append((time.perf_counter() - t0) * 1000.0)

        started = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(clients)))
        wall = time.perf_counter() - started
        for sid in ids:
            await client.delete(f"/v2/sessions/{sid}")
    done = per_client * clients
    return {
        "runs": done,
        "clients": clients,
        "sessions": sessions,
        "wall_s": round(wall, 3),
        "runs_per_s": round(done / wall, 1),
        "errors": len(errors),
        "first_errors": errors[:3],
        "latency": pct(latencies),
    }


def child(name: str, runs: int, tput_runs: int, out: Path) -> None:
    from _server import running_server

    _env, overrides = CONFIGS[name]
    result: dict[str, Any] = {"config": name, "load_before": load()}
    with running_server(**overrides) as (base, token, _settings):
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
            r = client.post("/v2/sessions", json=CREATE | {"runtime": "shell"})
            r.raise_for_status()
            sid = r.json()["session_id"]
            for _ in range(10):  # warm: host handle cached, auth cached, pools filled
                client.post(f"/v2/sessions/{sid}/run", json={"code": "true"})
            result["healthz"] = healthz(client, runs)
            result["true_sequential"] = sequential(client, sid, runs)
            client.delete(f"/v2/sessions/{sid}")
        result["echo_16x8"] = asyncio.run(throughput(base, token, tput_runs, 16, 8))
    result["load_after"] = load()
    out.write_text(json.dumps(result))


# --- the parent: alternate the configurations, print side by side ------------------------
def run_config(name: str, runs: int, tput_runs: int) -> dict[str, Any]:
    env_extra, _ = CONFIGS[name]
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = Path(f.name)
    env = {**os.environ, **env_extra}
    cmd = [sys.executable, __file__, "--child", name, "--runs", str(runs)]
    cmd += ["--throughput-runs", str(tput_runs), "--out", str(out)]
    proc = subprocess.run(cmd, env=env)
    try:
        if proc.returncode != 0:
            return {"config": name, "failed": f"exit {proc.returncode}"}
        return dict(json.loads(out.read_text()))
    finally:
        out.unlink(missing_ok=True)


def _cell(stats: dict[str, Any], key: str = "p50") -> str:
    return f"{stats[key]:.2f}" if stats.get("n") else "-"


def report(results: list[dict[str, Any]]) -> None:
    ok = [r for r in results if "failed" not in r]
    for r in results:
        if "failed" in r:
            print(f"{r['config']}: FAILED ({r['failed']})")
    if not ok:
        return
    cols = [f"{r['config']}#{i}" for i, r in enumerate(ok)]
    width = max(17, *(len(c) + 2 for c in cols))
    print("\nms per run of `true`, sequential (p50; Server-Timing phases):")
    print("phase".ljust(14) + "".join(c.rjust(width) for c in cols))
    for phase in (*PHASES, "app"):
        row = [_cell(r["true_sequential"]["phases"][phase]) for r in ok]
        print(phase.ljust(14) + "".join(v.rjust(width) for v in row))
    lines = {
        "client p50": lambda r: _cell(r["true_sequential"]["client"]),
        "client p95": lambda r: _cell(r["true_sequential"]["client"], "p95"),
        "overhead p50": lambda r: _cell(r["true_sequential"]["overhead"]),
        "overhead p95": lambda r: _cell(r["true_sequential"]["overhead"], "p95"),
        "healthz p50": lambda r: _cell(r["healthz"]),
        "echo runs/s": lambda r: f"{r['echo_16x8']['runs_per_s']:.0f}",
        "echo errors": lambda r: str(r["echo_16x8"]["errors"]),
        "echo p50": lambda r: _cell(r["echo_16x8"]["latency"]),
        "load before": lambda r: "/".join(f"{x:.1f}" for x in r["load_before"]),
        "load after": lambda r: "/".join(f"{x:.1f}" for x in r["load_after"]),
    }
    print("-" * (14 + width * len(cols)))
    for label, fn in lines.items():
        print(label.ljust(14) + "".join(fn(r).rjust(width) for r in ok))
    print(
        f"targets: overhead p50 <= {TARGETS['overhead_p50']} ms, p95 <= "
        f"{TARGETS['overhead_p95']} ms; `true` p50 <= {TARGETS['true_p50']} ms; "
        f"echo 16x8 >= {TARGETS['runs_per_s']:.0f} runs/s with 0 errors"
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--configs", default="haproxy,proxy")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--throughput-runs", type=int, default=1600)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.throughput_runs = 40, 160
    if args.child:
        child(args.child, args.runs, args.throughput_runs, Path(args.out))
        return 0
    names = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        parser.error(f"unknown configs {unknown}; known: {', '.join(CONFIGS)}")
    results = []
    for _round in range(args.rounds):
        for name in names:
            print(f"--- {name} (round {_round + 1}/{args.rounds}), load {load()}", flush=True)
            results.append(run_config(name, args.runs, args.throughput_runs))
    report(results)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "runs": args.runs,
                "throughput_runs": args.throughput_runs,
                "targets_ms": TARGETS,
                "results": results,
                "at": time.time(),
            },
            indent=2,
        )
    )
    print(f"wrote {RESULTS}")
    return 0 if all("failed" not in r for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
