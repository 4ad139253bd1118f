"""Where a run-llm turn's time goes inside the replica: the route's steps run in-process
(no Ray, no HTTP ingress) on a real SQLite store, with the real LlmService, against the
zero-latency fake OpenAI server (tests/fakes/openai.py, its own process). Each step is
timed around its ``await``, so a thread hop counts with the work it carries.

    python bench/bench_llm_breakdown.py [--turns 300]

Steps: session read, the account's own keys, transcript read, plan (history, routing,
harness), budget reserve with the user entry, the upstream call through the SDK (and, for
comparison, the same request with plain httpx), settle with the assistant entry, the rest.
Prints p50/p95 per step; writes bench/results/llm_breakdown.json.
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
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._server import free_port  # noqa: E402
from bench.bench_sessions import pct  # noqa: E402
from tests.fakes.llm_process import FakeServer  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "llm_breakdown.json"
KEY = "sk-bench"
TURNS_PER_SESSION = 10


class Clock:
    def __init__(self) -> None:
        self.ms: dict[str, list[float]] = defaultdict(list)
        self.on = False

    def wrap(self, name: str, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                if self.on:
                    self.ms[name].append((time.perf_counter() - started) * 1000.0)

        return timed

    async def step(self, name: str, value: Awaitable[Any]) -> Any:
        return await self.wrap(name, lambda: value)()


async def run(turns: int, fake_url: str, home: Path) -> dict[str, Any]:
    from cerver.config import Settings, prepare_home
    from cerver.llm.conversation import estimate_tokens, exchanges
    from cerver.llm.service import LlmService
    from cerver.llm.turn import Plan, Turn
    from cerver.llm.wire import RunLlmRequest
    from cerver.store import SessionRow, Store
    from cerver.store.ids import new_id

    os.environ["OPENAI_API_KEY"] = KEY
    settings = Settings(
        home=home,
        database_url=f"sqlite:///{home / 'cerver.db'}",
        llm_base_urls={"openai": f"{fake_url}/v1"},
    )
    prepare_home(settings)
    store = Store.open(settings.database_url)
    account = store.accounts.get_or_create("bench")
    service = LlmService(settings, store)
    clock = Clock()
    # The reservation commits with the user entry, and the settlement with the assistant
    # entry (cerver/llm/turn.py): each pair is one step here.
    reserve = clock.wrap("budget reserve + user entry", service.budget.reserve)
    service.budget.reserve = reserve  # type: ignore[method-assign]
    body = RunLlmRequest.model_validate({"model": "gpt-5", "input": "hi"})
    harness = service.harness_for(service.catalog.get("gpt-5"))
    harness.complete = clock.wrap("upstream call (SDK)", harness.complete)  # type: ignore[method-assign]

    class TimedTurn(Turn):
        async def _append(self, type_: str, content: dict[str, Any]) -> int:
            settles = getattr(self, "_unsettled", None)
            name = f"{type_} entry" + (" + budget settle" if settles else "")
            return await clock.step(name, super()._append(type_, content))

    raw = httpx.AsyncClient(base_url=f"{fake_url}/v1")
    sid = ""
    cpu = 0.0
    for i in range(turns + 10):
        clock.on = i >= 10
        cpu_started = time.process_time()
        if i % TURNS_PER_SESSION == 0:
            sid = new_id("ses")
            stamp = time.time()
            row = SessionRow(
                id=sid, account_id=account.id, name=None, status="open", provider=None,
                compute_id=None, harness="openai", runtime="shell", created_at=stamp,
                updated_at=stamp, closed_at=None, metrics={}, routing=None,
            )  # fmt: skip
            store.sessions.create(row, [])
        started = time.perf_counter()
        found = await clock.step("session read", asyncio.to_thread(store.sessions.get, sid))
        own = await clock.step("own keys", service.endpoints_of(account.id))
        entries = await clock.step(
            "transcript read", asyncio.to_thread(store.sessions.transcript, sid, limit=100_000)
        )
        t0 = time.perf_counter()
        past = exchanges(entries)
        context = sum(estimate_tokens(e.user) + estimate_tokens(e.assistant) for e in past)
        models, ladder, decision = service.plan_models(
            found, body, depth=len(past), context_tokens=context + 2, own=own
        )
        service.harness_for(models[0], own)
        plan = Plan(models=models, ladder=ladder, routing=decision, max_output_tokens=4096)
        turn = TimedTurn(service, found, body, plan, None, entries, own=own)
        if clock.on:
            clock.ms["plan"].append((time.perf_counter() - t0) * 1000.0)
        async for _event in turn.events():
            pass
        if clock.on:
            clock.ms["total"].append((time.perf_counter() - started) * 1000.0)
            cpu += time.process_time() - cpu_started
            params = {"model": "gpt-5", "input": [{"role": "user", "content": "hi"}],
                      "max_output_tokens": 4096, "store": False}  # fmt: skip
            await clock.step("upstream call (plain httpx)", raw.post("/responses", json=params))
    await raw.aclose()
    await harness.aclose()
    steps = {name: pct(values) for name, values in clock.ms.items()}
    parts = [k for k in steps if k not in ("total", "upstream call (plain httpx)")]
    rest = [
        clock.ms["total"][i] - sum(clock.ms[k][i] for k in parts if len(clock.ms[k]) == turns)
        for i in range(turns)
    ]
    steps["rest (route code, events, response)"] = pct(rest)
    overhead = [
        t - u for t, u in zip(clock.ms["total"], clock.ms["upstream call (SDK)"], strict=True)
    ]
    steps["total minus upstream"] = pct(overhead)
    # CPU time of this process per turn (its threads included; the fake is another
    # process): what a turn costs the replica, much less swayed by the machine's load.
    steps["cpu per turn"] = {"n": turns, "mean": round(cpu * 1000.0 / turns, 3)}
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=300)
    args = parser.parse_args()
    before = [round(v, 2) for v in os.getloadavg()]
    home = Path(tempfile.mkdtemp(prefix="cerver-bench-llm-", dir="/tmp"))
    fake = FakeServer("tests.fakes.openai", free_port())
    try:
        steps = asyncio.run(run(args.turns, fake.url, home))
    finally:
        fake.stop()
        shutil.rmtree(home, ignore_errors=True)
    after = [round(v, 2) for v in os.getloadavg()]
    print(f"run-llm in-process breakdown, {args.turns} turns, load {before} -> {after}")
    for name, s in steps.items():
        if "p50" in s:
            print(f"  {name:40s} p50 {s['p50']:7.3f}  p95 {s['p95']:7.3f} ms")
        else:
            print(f"  {name:40s} mean {s['mean']:6.3f} ms")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "load_avg": {"before": before, "after": after},
        "turns": args.turns,
        "steps_ms": steps,
    }
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {RESULTS}", file=sys.stderr)


if __name__ == "__main__":
    main()
