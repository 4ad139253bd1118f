"""Cerver side by side with what a user would run instead, all started by this script on the
same machine in the same run, and the raw floors beneath them.

1. ``POST /v2/sessions/:id/run`` against a hand-written FastAPI + uvicorn endpoint
   (bench/_handwritten_run.py) that runs the same command under the same bwrap flags, a
   fresh bwrap per request: sequential latency of ``true`` (p50/p95) and runs/s of
   ``echo`` from 16 concurrent clients (Cerver: over 8 sessions), as ratios.
2. ``POST /v2/sessions/:id/run-llm`` against the LiteLLM proxy (bench/_litellm.py, its own
   venv), both in front of the same zero-latency fake OpenAI server (tests/fakes/openai.py):
   added latency (each side's client latency minus a direct call to the same fake endpoint
   it uses: Cerver's openai harness speaks the Responses API, LiteLLM's ``openai/`` models
   Chat Completions) p50/p95, and turns/s from 16 concurrent clients.
3. The floors: a ``bash -c true`` spawn, a bwrap spawn with Cerver's flags, the local
   sandbox supervisor's own round trip (the local adapter called directly), an HTTP no-op
   on uvicorn and Cerver's ``GET /healthz`` (the Serve ingress alone).

Sequential samples alternate between the sides in rounds, so a change of load on this
shared machine hits both; the load average is recorded around every section, which
starts once Cerver's processes are idle (a warm pool refilling after the last section
would land in the next one's numbers). Throughput runs also report the CPU the side's own
processes spent per request, which the machine's load hardly moves.

    python bench/bench_side_by_side.py [--n 200] [--total 800] [--clients 16] [--quick]
    python bench/bench_side_by_side.py --only run,floor     # skip the LiteLLM comparison

Prints a table and writes bench/results/side_by_side.json (with --no-haproxy, Serve's
own proxy as the front door: side_by_side_proxy.json).
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

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._handwritten_run import bwrap_flags  # noqa: E402
from bench._litellm import LiteLLMProxy, ensure_venv  # noqa: E402
from bench._server import free_port, running_server  # noqa: E402
from bench.bench_sessions import pct  # noqa: E402
from tests.fakes.llm_process import FakeServer  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "side_by_side.json"
KEY = "sk-bench-upstream"
MASTER = "sk-bench-litellm-master"
MODEL = "gpt-5"
SESSIONS = 8
TURNS_PER_SESSION = 10  # a fresh session every 10 turns keeps the conversation small
Call = Callable[[], Awaitable[float]]  # one request; its client latency in ms


def load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


async def timed(op: Callable[[], Awaitable[Any]]) -> float:
    started = time.perf_counter()
    await op()
    return (time.perf_counter() - started) * 1000.0


async def alternate(sides: dict[str, Call], n: int, rounds: int = 5) -> dict[str, list[float]]:
    """``n`` sequential samples per side, taken in ``rounds`` alternating blocks."""
    out: dict[str, list[float]] = {name: [] for name in sides}
    per = max(1, n // rounds)
    for _ in range(rounds):
        for name, call in sides.items():
            for _ in range(per):
                out[name].append(await call())
    return out


# The servers this script started, by side; everything else below this process is Cerver's
# (Ray's processes, the Serve proxy and replicas, the session hosts and their sandboxes).
SERVER_PIDS: dict[str, int] = {}


def cpu_s(side: str) -> float:
    """CPU seconds used so far by a side's process tree (children that exited and were
    reaped included): a cost per request that the machine's load hardly moves."""
    parent: dict[int, int] = {}
    used: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parent[int(entry)] = int(fields[1])
            used[int(entry)] = sum(int(v) for v in fields[11:15]) / tick
    others = {pid for name, pid in SERVER_PIDS.items() if name != side}
    root = SERVER_PIDS.get(side, os.getpid())

    def belongs(pid: int) -> bool:
        while pid > 1:
            if pid in others:
                return False
            if pid == root:
                return True
            pid = parent.get(pid, 0)
        return False

    return sum(cpu for pid, cpu in used.items() if pid != os.getpid() and belongs(pid))


async def settled(side: str, limit_s: float = 60.0) -> float:
    """Wait until a side's processes are nearly idle (a session's warm pool refilling, a
    host hibernating: background work that would land in the next section's numbers);
    returns the CPU they used per second of the last quiet second, in ms."""
    deadline = time.monotonic() + limit_s
    while True:
        before = cpu_s(side)
        await asyncio.sleep(1.0)
        busy_ms = (cpu_s(side) - before) * 1000.0
        if busy_ms < 100.0 or time.monotonic() > deadline:
            return round(busy_ms, 1)


async def throughput(
    make_call: Callable[[int], Call], total: int, clients: int, side: str
) -> dict[str, Any]:
    """``total`` requests from ``clients`` concurrent loops; client ``i`` uses
    ``make_call(i)``. Runs/s over the wall time, errors counted, latency percentiles, and
    the CPU the side's server processes spent per request."""
    left = [total]
    latencies: list[float] = []
    errors: list[str] = []

    async def client(i: int) -> None:
        call = make_call(i)
        while left[0] > 0:
            left[0] -= 1
            try:
                latencies.append(await call())
            except (httpx.HTTPError, AssertionError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}"[:200])

    cpu_before = cpu_s(side)
    started = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    wall = time.perf_counter() - started
    return {
        "server_cpu_ms_per_request": round((cpu_s(side) - cpu_before) * 1000.0 / total, 2),
        "per_s": round(total / wall, 1),
        "wall_s": round(wall, 3),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "latency_ms": pct(latencies),
    }


def check(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 200, f"{r.request.url.path}: {r.status_code} {r.text[:200]}"
    body: dict[str, Any] = r.json()
    return body


# --- 1. run -----------------------------------------------------------------------------
async def compare_run(cerver: httpx.AsyncClient, mine: httpx.AsyncClient, a: argparse.Namespace):
    sids = []
    for _ in range(SESSIONS):
        r = await cerver.post("/v2/sessions", json={"compute": {"provider": "local"}})
        sids.append(r.json()["session_id"])
    overhead: list[float] = []

    async def cerver_true(sid: str = sids[0], code: str = "true") -> float:
        started = time.perf_counter()
        body = check(await cerver.post(f"/v2/sessions/{sid}/run", json={"code": code}))
        took = (time.perf_counter() - started) * 1000.0
        assert body["exit_code"] == 0, body
        if code == "true":
            overhead.append(took - body["duration_ms"])
        return took

    async def mine_true(code: str = "true") -> float:
        started = time.perf_counter()
        body = check(await mine.post("/run", json={"code": code}))
        assert body["exit_code"] == 0, body
        return (time.perf_counter() - started) * 1000.0

    for _ in range(5):  # warm both (the session's supervisor, the interpreter's code paths)
        await cerver_true()
        await mine_true()
    overhead.clear()
    seq = await alternate({"cerver": cerver_true, "handwritten": mine_true}, a.n)
    c_seq, h_seq = pct(seq["cerver"]), pct(seq["handwritten"])
    c_tp = await throughput(
        lambda i: lambda: cerver_true(sids[i % SESSIONS], "echo hi"), a.total, a.clients, "cerver"
    )
    h_tp = await throughput(
        lambda i: lambda: mine_true("echo hi"), a.total, a.clients, "handwritten"
    )
    for sid in sids:
        await cerver.delete(f"/v2/sessions/{sid}")
    return {
        "sequential_true_ms": {"cerver": c_seq, "handwritten": h_seq},
        "cerver_gateway_overhead_ms": pct(overhead),
        f"echo_{a.clients}_clients": {"cerver": c_tp, "handwritten": h_tp},
        "ratio_p50": round(c_seq["p50"] / h_seq["p50"], 2),
        "ratio_p95": round(c_seq["p95"] / h_seq["p95"], 2),
        "ratio_runs_per_s": round(c_tp["per_s"] / h_tp["per_s"], 2),
        "ratio_server_cpu_per_run": round(
            c_tp["server_cpu_ms_per_request"] / h_tp["server_cpu_ms_per_request"], 2
        )
        if h_tp["server_cpu_ms_per_request"] > 0
        else None,
    }


# --- 2. run-llm -------------------------------------------------------------------------
class CerverTurns:
    """One client's run-llm turns; a new session every ``TURNS_PER_SESSION`` turns (made
    outside the timing)."""

    def __init__(self, api: httpx.AsyncClient) -> None:
        self.api, self.sid, self.turns = api, "", 0

    async def turn(self) -> float:
        if self.turns % TURNS_PER_SESSION == 0:
            r = await self.api.post("/v2/sessions", json={"compute": None, "harness": "openai"})
            self.sid = r.json()["session_id"]
        self.turns += 1
        started = time.perf_counter()
        body = check(
            await self.api.post(
                f"/v2/sessions/{self.sid}/run-llm", json={"model": MODEL, "input": "hi"}
            )
        )
        assert body["output"], body
        return (time.perf_counter() - started) * 1000.0


async def compare_llm(
    cerver: httpx.AsyncClient, fake: httpx.AsyncClient, proxy: httpx.AsyncClient | None,
    a: argparse.Namespace,
) -> dict[str, Any]:  # fmt: skip
    messages = [{"role": "user", "content": "hi"}]

    async def direct_responses() -> float:
        body = {"model": MODEL, "input": messages, "store": False, "max_output_tokens": 4096}
        return await timed(lambda: fake.post("/v1/responses", json=body))

    async def direct_chat() -> float:
        return await timed(
            lambda: fake.post("/v1/chat/completions", json={"model": MODEL, "messages": messages})
        )

    async def litellm_turn(api: httpx.AsyncClient) -> float:
        started = time.perf_counter()
        body = check(
            await api.post("/v1/chat/completions", json={"model": MODEL, "messages": messages})
        )
        assert body["choices"][0]["message"]["content"], body
        return (time.perf_counter() - started) * 1000.0

    mine = CerverTurns(cerver)
    sides: dict[str, Call] = {
        "cerver_run_llm": mine.turn,
        "direct_responses": direct_responses,
        "direct_chat": direct_chat,
    }
    if proxy is not None:
        sides["litellm_proxy"] = lambda: litellm_turn(proxy)
    for call in sides.values():  # warm: SDK clients, price tables, connections
        for _ in range(5):
            await call()
    seq = await alternate(sides, a.n)
    stats = {name: pct(v) for name, v in seq.items()}
    out: dict[str, Any] = {"sequential_ms": stats}
    added = {"cerver_run_llm": "direct_responses", "litellm_proxy": "direct_chat"}
    out["added_ms"] = {
        side: {q: round(stats[side][q] - stats[base][q], 2) for q in ("p50", "p95")}
        for side, base in added.items()
        if side in stats
    }
    turns = {
        "cerver_run_llm": await throughput(
            lambda _i: CerverTurns(cerver).turn, a.total, a.clients, "cerver"
        ),
        "direct_chat": await throughput(lambda _i: direct_chat, a.total, a.clients, "fake"),
    }
    if proxy is not None:
        turns["litellm_proxy"] = await throughput(
            lambda _i: lambda: litellm_turn(proxy), a.total, a.clients, "litellm"
        )
        c, lt = out["added_ms"]["cerver_run_llm"], out["added_ms"]["litellm_proxy"]
        out["ratio_added_p50"] = round(c["p50"] / lt["p50"], 2) if lt["p50"] > 0 else None
        out["ratio_turns_per_s"] = round(
            turns["cerver_run_llm"]["per_s"] / turns["litellm_proxy"]["per_s"], 2
        )
        cpu = [turns[k]["server_cpu_ms_per_request"] for k in ("cerver_run_llm", "litellm_proxy")]
        out["ratio_server_cpu_per_turn"] = round(cpu[0] / cpu[1], 2) if cpu[1] > 0 else None
    out[f"turns_{a.clients}_clients"] = turns
    return out


# --- 3. floors --------------------------------------------------------------------------
async def spawn(argv: list[str]) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()


async def supervisor_round_trips(n: int) -> list[float]:
    """``true`` through the local adapter directly: the sandbox's supervisor, no gateway."""
    from cerver.adapters.base import ExecRequest, SandboxSpec
    from cerver.adapters.local import LocalAdapter
    from cerver.config import Settings

    home = Path(tempfile.mkdtemp(prefix="cerver-bench-floor-", dir="/tmp"))
    os.chmod(home, 0o711)
    adapter = LocalAdapter(Settings(home=home, database_url=f"sqlite:///{home / 'x.db'}"))
    record = await adapter.create_sandbox(SandboxSpec(account_id="acct_bench"))
    request = ExecRequest(code="true")
    try:
        for _ in range(5):
            await adapter.run(record, request)
        return [await timed(lambda: adapter.run(record, request)) for _ in range(n)]
    finally:
        await adapter.delete_sandbox(record)
        await adapter.close()
        shutil.rmtree(home, ignore_errors=True)


async def floors(
    cerver: httpx.AsyncClient, mine: httpx.AsyncClient, workspace: str, n: int
) -> dict[str, Any]:
    bwrap = [*bwrap_flags(workspace), "/bin/bash", "-c", "true"]
    sides: dict[str, Call] = {
        "bash_c_true_spawn": lambda: timed(lambda: spawn(["/bin/bash", "-c", "true"])),
        "bwrap_spawn_true": lambda: timed(lambda: spawn(bwrap)),
        "uvicorn_http_noop": lambda: timed(lambda: mine.get("/noop")),
        "cerver_healthz": lambda: timed(lambda: cerver.get("/healthz")),
    }
    for call in sides.values():
        await call()
    out = {name: pct(v) for name, v in (await alternate(sides, n)).items()}
    out["supervisor_round_trip_true"] = pct(await supervisor_round_trips(n))
    return out


# --- the run ----------------------------------------------------------------------------
def start_handwritten(port: int, workspace: str) -> Any:
    import subprocess

    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "_handwritten_run.py"),
         "--port", str(port), "--workspace", workspace],
        cwd=ROOT, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/noop", timeout=1).raise_for_status()
            return proc
        except httpx.HTTPError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("the hand-written endpoint did not start") from None
            time.sleep(0.2)


async def measure(
    a: argparse.Namespace, base: str, token: str, fake_url: str, proxy_url: str | None,
    hand_url: str, workspace: str, report: dict[str, Any],
) -> None:  # fmt: skip
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    auth = {"Authorization": f"Bearer {token}"}
    async with (
        httpx.AsyncClient(base_url=base, headers=auth, timeout=60, limits=limits) as cerver,
        httpx.AsyncClient(base_url=hand_url, timeout=60, limits=limits) as mine,
        httpx.AsyncClient(base_url=fake_url, timeout=60, limits=limits) as fake,
        httpx.AsyncClient(
            base_url=proxy_url or fake_url, timeout=60, limits=limits,
            headers={"Authorization": f"Bearer {MASTER}"},
        ) as proxy,
    ):  # fmt: skip
        for name, section in (
            ("floor", lambda: floors(cerver, mine, workspace, a.n)),
            ("llm", lambda: compare_llm(cerver, fake, proxy if proxy_url else None, a)),
            ("run", lambda: compare_run(cerver, mine, a)),
        ):
            if name not in a.only:
                continue
            idle_ms_per_s = await settled("cerver")
            before = load()
            started = time.perf_counter()
            result = await section()
            result["load_avg"] = {"before": before, "after": load()}
            result["cerver_idle_cpu_ms_per_s_before"] = idle_ms_per_s
            result["took_s"] = round(time.perf_counter() - started, 1)
            report[name] = result
            print(f"{name}: done in {result['took_s']} s, load {before} -> {load()}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="sequential samples per side")
    parser.add_argument("--total", type=int, default=800, help="requests per throughput run")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--only", default="floor,run,llm")
    parser.add_argument("--quick", action="store_true", help="--n 40 --total 160")
    parser.add_argument(
        "--haproxy",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the front door: Ray's HAProxy ingress (the server's default) or, with "
        "--no-haproxy, Serve's own proxy",
    )
    a = parser.parse_args()
    if a.quick:
        a.n, a.total = 40, 160
    a.only = set(a.only.split(","))
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "kernel": platform.release(),
            "load_avg_before": load(),
        },
        "how": {"n": a.n, "total": a.total, "clients": a.clients, "sessions": SESSIONS},
        "serve_env": {k: v for k, v in os.environ.items() if k.startswith("RAY_SERVE_")},
    }
    workspace = tempfile.mkdtemp(prefix="cerver-bench-handwritten-", dir="/tmp")
    fake = FakeServer("tests.fakes.openai", free_port())
    hand_port = free_port()
    hand = start_handwritten(hand_port, workspace)
    SERVER_PIDS.update(fake=fake.proc.pid, handwritten=hand.pid)
    proxy: LiteLLMProxy | None = None
    try:
        if "llm" in a.only:
            why = ensure_venv()
            if why is None:
                try:
                    proxy = LiteLLMProxy(free_port(), MODEL, f"{fake.url}/v1", KEY, MASTER)
                    SERVER_PIDS["litellm"] = proxy.proc.pid
                except RuntimeError as exc:
                    why = str(exc)
            if why is not None:
                report["litellm_skipped"] = why
                print(f"LiteLLM comparison SKIPPED: {why}", flush=True)
        with running_server(
            env={"OPENAI_API_KEY": KEY},
            llm_base_urls={"openai": f"{fake.url}/v1"},
            serve_haproxy=a.haproxy,  # the front door is set from this, before Ray starts
        ) as (base, token, _settings):
            asyncio.run(
                measure(
                    a, base, token, fake.url, proxy.url if proxy else None,
                    f"http://127.0.0.1:{hand_port}", workspace, report,
                )
            )  # fmt: skip
    finally:
        if proxy is not None:
            proxy.stop()
        hand.terminate()
        hand.wait(timeout=15)
        fake.stop()
        shutil.rmtree(workspace, ignore_errors=True)
    report["machine"]["load_avg_after"] = load()
    print_table(report)
    out = RESULTS if a.haproxy else RESULTS.with_name("side_by_side_proxy.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}", file=sys.stderr)


def print_table(r: dict[str, Any]) -> None:
    def row(label: str, s: dict[str, Any], extra: str = "") -> None:
        print(f"  {label:34s} p50 {s['p50']:8.2f}  p95 {s['p95']:8.2f} ms  n={s['n']}{extra}")

    print(f"\nside by side, {r['date']}, {r['machine']['cpus']} CPUs")
    if "floor" in r:
        print(f"floors (load {r['floor']['load_avg']['before']})")
        for name, s in r["floor"].items():
            if isinstance(s, dict) and "p50" in s:
                row(name, s)
    if "run" in r:
        run = r["run"]
        print(f"run: Cerver vs hand-written FastAPI + bwrap (load {run['load_avg']['before']})")
        for side, s in run["sequential_true_ms"].items():
            row(f"true sequential, {side}", s)
        row("Cerver gateway overhead", run["cerver_gateway_overhead_ms"])
        for side, t in next(v for k, v in run.items() if k.startswith("echo_")).items():
            print(
                f"  {'echo runs/s, ' + side:34s} {t['per_s']:8.1f} /s  errors {t['errors']}  "
                f"server CPU {t['server_cpu_ms_per_request']:.2f} ms/run"
            )
        print(
            f"  ratio Cerver / hand-written: p50 x{run['ratio_p50']}  p95 x{run['ratio_p95']}  "
            f"runs/s x{run['ratio_runs_per_s']}  server CPU x{run['ratio_server_cpu_per_run']}"
        )
    if "llm" in r:
        llm = r["llm"]
        print(
            "run-llm: Cerver vs LiteLLM proxy, zero-latency fake "
            f"(load {llm['load_avg']['before']})"
        )
        for side, s in llm["sequential_ms"].items():
            row(side, s)
        for side, d in llm["added_ms"].items():
            print(f"  {'added, ' + side:34s} p50 {d['p50']:8.2f}  p95 {d['p95']:8.2f} ms")
        for side, t in next(v for k, v in llm.items() if k.startswith("turns_")).items():
            print(
                f"  {'turns/s, ' + side:34s} {t['per_s']:8.1f} /s  errors {t['errors']}  "
                f"server CPU {t['server_cpu_ms_per_request']:.2f} ms/turn"
            )
        if "ratio_added_p50" in llm:
            print(
                f"  ratio Cerver / LiteLLM: added p50 x{llm['ratio_added_p50']}  "
                f"turns/s x{llm['ratio_turns_per_s']}  "
                f"server CPU x{llm['ratio_server_cpu_per_turn']}"
            )
    if "litellm_skipped" in r:
        print(f"  LiteLLM: skipped ({r['litellm_skipped']})")
    print(
        f"load average before {r['machine']['load_avg_before']}, "
        f"after {r['machine']['load_avg_after']}"
    )


if __name__ == "__main__":
    main()
