"""Cerver's own overhead per e2b operation: the e2b adapter vs the official SDK called
directly, both against the same fake E2B (tests/fakes/e2b.py) with no added latency.

    python bench/bench_e2b.py [--n 30]

Operations, each timed both ways and interleaved (so machine load hits both alike):
  create       adapter.create_sandbox  vs  AsyncSandbox.create + create_code_context
  run shell    adapter.run("true")     vs  sandbox.commands.run("true")
  run python   adapter.run("x = 1")    vs  sandbox.run_code("x = 1", context)
  stream open  first stdout event of adapter.run_stream("echo x")  vs  first on_stdout
               callback of sandbox.commands.run("echo x", background=True)
The fake's own work (a real local sandbox per E2B sandbox) is in both columns; the
difference is what the adapter adds. Prints p50/p95/p99; writes bench/results/e2b.json.
Measured on a shared, loaded machine: compare the columns, not absolute numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _side_by_side import compare, write_report
from bench_local_adapter import timed  # bench/ is the script's directory

from cerver.adapters import registry
from cerver.adapters.base import ExecRequest, SandboxSpec
from cerver.config import Settings
from tests.fakes import e2b as fake_e2b

RESULTS = Path(__file__).parent / "results" / "e2b.json"
KEY = "e2b_bench_key"


async def first_event_ms(start_stream: Callable[[asyncio.Event], Awaitable[Any]]) -> float:
    seen = asyncio.Event()
    start = time.perf_counter()
    finish = asyncio.ensure_future(start_stream(seen))
    await seen.wait()
    ms = (time.perf_counter() - start) * 1000
    await finish
    return ms


async def bench(fake: fake_e2b.FakeProcess, n: int) -> dict[str, dict[str, Any]]:
    from e2b_code_interpreter import AsyncSandbox

    home = Path(tempfile.mkdtemp(prefix="cerver-bench-e2b-"))
    settings = Settings(
        home=home,
        database_url=f"sqlite:///{home / 'unused.db'}",
        e2b_api_url=fake.url,
        e2b_sandbox_url=fake.env["CERVER_E2B_SANDBOX_URL"],
    )
    adapter = registry.get("e2b")(settings, {"e2b_api_key": KEY})
    sdk_opts = {"api_key": KEY, "api_url": fake.url, "sandbox_url": fake.url}
    spec = SandboxSpec(account_id="acct_bench")
    samples: dict[str, dict[str, list[float]]] = {}

    def note(op: str, side: str, ms: float) -> None:
        samples.setdefault(op, {"cerver": [], "sdk": []})[side].append(ms)

    async def sdk_create() -> Any:
        sandbox = await AsyncSandbox.create(timeout=600, **sdk_opts)
        await sandbox.create_code_context()
        return sandbox

    for _ in range(max(3, n // 3)):  # creates are slow (a real sandbox each): fewer of them
        ms, record = await timed(lambda: adapter.create_sandbox(spec))
        note("create", "cerver", ms)
        await adapter.delete_sandbox(record)
        ms, sandbox = await timed(sdk_create)
        note("create", "sdk", ms)
        await sandbox.kill()

    record = await adapter.create_sandbox(spec)
    sandbox = await AsyncSandbox.connect(record.sandbox_id, **sdk_opts)
    context = await sandbox.create_code_context()
    shell, python = ExecRequest(code="true"), ExecRequest(code="x = 1", language="python")
    echo = ExecRequest(code="echo x")
    try:
        await adapter.run(record, shell)  # warm both paths once
        await sandbox.commands.run("true")
        for _ in range(n):
            note("run shell", "cerver", (await timed(lambda: adapter.run(record, shell)))[0])
            note("run shell", "sdk", (await timed(lambda: sandbox.commands.run("true")))[0])
            note("run python", "cerver", (await timed(lambda: adapter.run(record, python)))[0])
            ms, _ = await timed(lambda: sandbox.run_code("x = 1", context=context))
            note("run python", "sdk", ms)

            async def cerver_stream(seen: asyncio.Event) -> None:
                async for event in adapter.run_stream(record, echo):
                    if event.type == "stdout":
                        seen.set()

            async def sdk_stream(seen: asyncio.Event) -> None:
                handle = await sandbox.commands.run(
                    "echo x", background=True, on_stdout=lambda _: seen.set()
                )
                await handle.wait()

            note("stream open", "cerver", await first_event_ms(cerver_stream))
            note("stream open", "sdk", await first_event_ms(sdk_stream))
    finally:
        await adapter.delete_sandbox(record)
        await adapter.close()

    return compare(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=30)
    args = parser.parse_args()
    load_before = os.getloadavg()
    with fake_e2b.running() as fake:
        ops = asyncio.run(bench(fake, args.n))
    write_report(
        RESULTS,
        "e2b adapter vs official SDK, same fake E2B on loopback, interleaved",
        ops,
        load_before,
    )


if __name__ == "__main__":
    main()
