"""The hibernation part of bench_sessions.py: N idle sessions on one node, then wake-and-run.

1. Make N sessions, ``--create-concurrency`` at a time; each runs ``echo hi > f.txt`` (the
   run must answer exit 0). A sampler records processes and memory every 2 s (the peak).
   CPU seconds spent per session by each kind of process (session hosts, their sandboxes,
   Serve, Ray's daemons, this driver) say what bounds the create rate.
2. Wait until no session is live and every one is hibernated: the directory binds none,
   no sandbox process is left beyond the hosts' warm pools, and in the store every
   session's last transcript entry is ``hibernated`` (checked for all N, not a sample).
3. What the N hibernated sessions cost: resident memory of the session hosts and of
   everything, the hosts' open fds, workspaces and inodes on disk, store rows and bytes;
   per session = (after - before) / N.
4. Wake-and-run over a random sample: each sampled session runs ``cat f.txt`` (must print
   ``hi``), then once more while awake. The ``Server-Timing`` phases of the waking run say
   where its time went (route = finding and binding a host, load = the session's rows read
   back from the store, sandbox = restarting its processes plus the run, duration = the
   run itself).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import time
from typing import Any

import httpx
import ray
from _census import hibernated_sessions, machine_cpu_s, processes, store_rows, workspaces
from bench_breakdown import parse_server_timing
from bench_sessions import CREATE, pct

SAMPLE_EVERY_S = 2.0


def _census(settings: Any) -> dict[str, Any]:
    return {
        **processes(),
        "disk": workspaces(settings.sandboxes_dir),
        "store": store_rows(settings.database_url),
    }


def _cpu_by_kind(census: dict[str, Any]) -> dict[str, float]:
    return {k: v["cpu_s"] for k, v in census["by_kind"].items()}


def _per_session(before: dict[str, Any], after: dict[str, Any], n: int) -> dict[str, Any]:
    def kb(a: float, b: float) -> float:
        return round((b - a) * 1024 / n, 2)

    host = ("by_kind", "session_host", "rss_mb")

    def dig(c: dict[str, Any], path: tuple[str, ...]) -> float:
        for key in path:
            c = c.get(key, {}) if isinstance(c, dict) else {}
        return float(c) if isinstance(c, (int, float)) else 0.0

    return {
        "rss_kb_all": kb(before["rss_mb"], after["rss_mb"]),
        "rss_kb_session_hosts": kb(dig(before, host), dig(after, host)),
        "session_host_fds": round((after["session_host_fds"] - before["session_host_fds"]) / n, 4),
        "processes": round((after["processes"] - before["processes"]) / n, 4),
        "workspaces": round((after["disk"]["workspaces"] - before["disk"]["workspaces"]) / n, 3),
        "inodes": round((after["disk"]["inodes"] - before["disk"]["inodes"]) / n, 2),
        "store_sessions": round((after["store"]["sessions"] - before["store"]["sessions"]) / n, 3),
        "store_transcript_rows": round(
            (after["store"]["transcript"] - before["store"]["transcript"]) / n, 2
        ),
        "store_computes": round((after["store"]["computes"] - before["store"]["computes"]) / n, 3),
        "store_kb": kb(before["store"]["db_mb"], after["store"]["db_mb"]),
    }


async def _checkpoint(settings: Any, made: int, started: float) -> dict[str, Any]:
    """Every ``--checkpoint-every`` sessions made: what everything costs now (most of those
    made are hibernated by then; ``live`` says how many are not)."""
    directory = ray.get_actor("cerver-session-directory", namespace=settings.ray_namespace)
    stats = await directory.stats.remote()
    census = await asyncio.to_thread(_census, settings)
    return {
        "made": made,
        "seconds": round(time.perf_counter() - started, 1),
        "live": stats["live"],
        "hosts": stats["hosts"],
        "processes": census["processes"],
        "sandbox_processes": census["sandbox_processes"],
        "rss_mb": census["rss_mb"],
        "session_host_rss_mb": census["by_kind"].get("session_host", {}).get("rss_mb", 0.0),
        "serve_rss_mb": census["by_kind"].get("serve", {}).get("rss_mb", 0.0),
        "ray_rss_mb": census["by_kind"].get("ray", {}).get("rss_mb", 0.0),
        "session_host_fds": census["session_host_fds"],
        "disk": census["disk"],
        "store": census["store"],
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


async def _make(
    client: httpx.AsyncClient, settings: Any, args: argparse.Namespace
) -> tuple[list[str], dict[str, Any]]:
    n, concurrency = args.sessions, args.create_concurrency
    ids: list[str] = []
    create_ms: list[float] = []
    run_ms: list[float] = []
    run_phases: dict[str, list[float]] = {}
    checkpoints: list[dict[str, Any]] = []
    errors: dict[str, int] = {}
    started = time.perf_counter()
    give_up = started + args.max_create_s
    next_report = 500
    next_checkpoint = args.checkpoint_every
    todo = iter(range(n))

    def failed(what: str, r: httpx.Response) -> None:
        key = f"{what} {r.status_code}"
        errors[key] = errors.get(key, 0) + 1
        if errors[key] <= 3:
            print(f"  {key}: {r.text[:300]}", flush=True)

    async def worker() -> None:
        nonlocal next_report, next_checkpoint
        for _ in todo:
            if time.perf_counter() > give_up:
                return  # --max-create-s: the run goes on with the sessions made so far
            t0 = time.perf_counter()
            r = await client.post("/v2/sessions", json=CREATE)
            if r.status_code != 201:
                failed("create", r)
                continue
            sid = r.json()["session_id"]
            t1 = time.perf_counter()
            r = await client.post(f"/v2/sessions/{sid}/run", json={"code": "echo hi > f.txt"})
            if r.status_code != 200 or r.json().get("exit_code") != 0:
                failed("run", r)
                continue
            create_ms.append((t1 - t0) * 1000.0)
            run_ms.append((time.perf_counter() - t1) * 1000.0)
            for name, value in parse_server_timing(r.headers.get("server-timing", "")).items():
                run_phases.setdefault(name, []).append(value)
            ids.append(sid)
            if len(ids) >= next_checkpoint:
                next_checkpoint += args.checkpoint_every
                checkpoints.append(await _checkpoint(settings, len(ids), started))
                print(f"  checkpoint {checkpoints[-1]}", flush=True)
            if len(ids) >= next_report:
                next_report += 500
                took = time.perf_counter() - started
                print(f"  {len(ids)} sessions made, {took:.0f} s ({len(ids) / took:.1f}/s)",
                      flush=True)  # fmt: skip

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    took = time.perf_counter() - started
    return ids, {
        "made": len(ids),
        "errors": errors,
        "seconds": round(took, 1),
        "per_second": round(len(ids) / took, 2) if took else 0.0,
        "create_ms": pct(create_ms),
        "first_run_ms": pct(run_ms),
        "first_run_phases_p50_ms": {k: pct(v).get("p50") for k, v in sorted(run_phases.items())},
        "checkpoints": checkpoints,
    }


async def _sample_peak(peak: dict[str, Any], stop: asyncio.Event) -> None:
    while not stop.is_set():
        now = await asyncio.to_thread(processes)
        for key in ("rss_mb", "processes", "sandbox_processes", "session_hosts"):
            peak[key] = max(peak.get(key, 0), now[key])
        host_rss = now["by_kind"].get("session_host", {}).get("rss_mb", 0.0)
        peak["session_host_rss_mb"] = max(peak.get("session_host_rss_mb", 0.0), host_rss)
        peak["session_host_fds"] = max(peak.get("session_host_fds", 0), now["session_host_fds"])
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SAMPLE_EVERY_S)


async def _await_hibernation(settings: Any, ids: list[str], limit_s: float) -> dict[str, Any]:
    """Until the directory binds no session, sandbox processes are back to the hosts' warm
    pools, and the store says every session hibernated."""
    directory = ray.get_actor("cerver-session-directory", namespace=settings.ray_namespace)
    started = time.perf_counter()
    state: dict[str, Any] = {}
    while time.perf_counter() - started < limit_s:
        stats = await directory.stats.remote()
        procs = await asyncio.to_thread(processes)
        state = {
            "live_sessions": stats["live"],
            "hosts": stats["hosts"],
            "sandbox_processes": procs["sandbox_processes"],
        }
        if stats["live"] == 0:
            state |= await asyncio.to_thread(hibernated_sessions, settings.database_url, ids)
            if state["last_entry_hibernated"] == len(ids):
                break
        await asyncio.sleep(2.0)
    state["waited_s"] = round(time.perf_counter() - started, 1)
    state["all_hibernated"] = state.get("live_sessions") == 0 and state.get(
        "last_entry_hibernated"
    ) == len(ids)
    return state


async def _footprints(settings: Any) -> dict[str, Any]:
    """What the session hosts hold in memory after every session hibernated."""
    directory = ray.get_actor("cerver-session-directory", namespace=settings.ray_namespace)
    return dict(await directory.footprint.remote())


async def _wake(
    client: httpx.AsyncClient, ids: list[str], samples: int, seed: int
) -> dict[str, Any]:
    chosen = random.Random(seed).sample(ids, min(samples, len(ids)))
    wake_ms: list[float] = []
    awake_ms: list[float] = []
    phases: dict[str, list[float]] = {}
    bad = 0
    for sid in chosen:
        t0 = time.perf_counter()
        r = await client.post(f"/v2/sessions/{sid}/run", json={"code": "cat f.txt"})
        ms = (time.perf_counter() - t0) * 1000.0
        if r.status_code != 200 or r.json().get("stdout") != "hi\n":
            bad += 1
            continue
        wake_ms.append(ms)
        timing = parse_server_timing(r.headers.get("server-timing", ""))
        timing["duration"] = float(r.json()["duration_ms"])
        timing["client"] = ms
        timing["http"] = ms - timing.get("app", 0.0)
        for name, value in timing.items():
            phases.setdefault(name, []).append(value)
        t0 = time.perf_counter()
        r = await client.post(f"/v2/sessions/{sid}/run", json={"code": "cat f.txt"})
        if r.status_code == 200:
            awake_ms.append((time.perf_counter() - t0) * 1000.0)
    return {
        "samples": len(chosen),
        "failed": bad,
        "wake_and_run_ms": pct(wake_ms),
        "then_awake_run_ms": pct(awake_ms),
        "phases_p50_ms": {k: pct(v).get("p50") for k, v in sorted(phases.items())},
        "phases_p95_ms": {k: pct(v).get("p95") for k, v in sorted(phases.items())},
    }


async def hibernation_run(
    client: httpx.AsyncClient, settings: Any, args: argparse.Namespace
) -> dict[str, Any]:
    n = args.sessions
    await asyncio.sleep(2.0)  # the warm pools settle
    before = await asyncio.to_thread(_census, settings)
    machine_before = machine_cpu_s()
    peak: dict[str, Any] = {}
    stop = asyncio.Event()
    sampler = asyncio.create_task(_sample_peak(peak, stop))
    ids, made = await _make(client, settings, args)
    stop.set()
    await sampler
    created = await asyncio.to_thread(processes)
    machine_spent = machine_cpu_s() - machine_before
    ours = {
        k: round(v - _cpu_by_kind(before).get(k, 0.0), 2) for k, v in _cpu_by_kind(created).items()
    }
    cpu = {
        "cpu_s_by_kind": ours,
        "cpu_ms_per_session_by_kind": {
            k: round(1000.0 * v / max(len(ids), 1), 1) for k, v in ours.items()
        },
        "ours_cpu_s": round(sum(ours.values()), 1),
        "machine_cpu_s": round(machine_spent, 1),
        "others_cpu_s": round(max(machine_spent - sum(ours.values()), 0.0), 1),
        "cores": os.cpu_count(),
    }
    limit = args.hibernate_after * 4 + 120 + len(ids) * 0.02
    hibernation = await _await_hibernation(settings, ids, limit)
    await asyncio.sleep(1.0)
    after = await asyncio.to_thread(_census, settings)
    footprints = await _footprints(settings)  # before the wake binds some again
    wake = await _wake(client, ids, args.wake_samples, args.seed)
    return {
        "sessions": len(ids),
        "sessions_asked": n,
        "create_concurrency": args.create_concurrency,
        "hibernate_after_s": args.hibernate_after,
        "made": made,
        "create_cpu": cpu,
        "hibernation": hibernation,
        "before": before,
        "peak": peak,
        "after_hibernation": after,
        "per_hibernated_session": _per_session(before, after, max(len(ids), 1)),
        "host_footprints": footprints,
        "wake": wake,
        "load_average_1m_end": round(os.getloadavg()[0], 2),
    }
