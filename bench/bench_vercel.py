"""Cerver's own overhead per vercel operation: the vercel adapter vs the official
``vercel-sandbox`` SDK called directly, both against the same fake Vercel
(tests/fakes/vercel.py) with no added latency.

    python bench/bench_vercel.py [--n 30]

Operations, each timed both ways and interleaved (so machine load hits both alike):
  create       adapter.create_sandbox       vs  create_sandbox(persistent=True)
  run shell    adapter.run("true")          vs  sandbox.run_process("bash", ["-c", "true"])
  stream open  first stdout event of adapter.run_stream("echo x")  vs  first write to
               the SDK's stdout stream of run_process("bash", ["-c", "echo x"])
The adapter looks the sandbox up by name on every call (it keeps no handle between
calls, so a restarted host reconnects from the record): that extra GET is part of what
it adds. The fake's own work (a real local sandbox per Vercel sandbox) is in both
columns. Prints p50/p95/p99; writes bench/results/vercel.json. Measured on a shared,
loaded machine: compare the columns, not absolute numbers.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _side_by_side import compare, main_against_fake
from bench_e2b import first_event_ms  # bench/ is the script's directory
from bench_local_adapter import timed

from cerver.adapters import registry
from cerver.adapters.base import ExecRequest, SandboxSpec
from cerver.config import Settings

RESULTS = Path(__file__).parent / "results" / "vercel.json"
TOKEN = "vercel_bench_token"


class _Signal:
    """A text stream for the SDK's stdout: the first write sets the event."""

    def __init__(self, seen: asyncio.Event) -> None:
        self.seen = seen

    def write(self, data: str) -> int:
        self.seen.set()
        return len(data)

    def flush(self) -> None:
        pass


@asynccontextmanager
async def sdk_session(url: str) -> AsyncIterator[Any]:
    from vercel import sandbox as sdk
    from vercel.api import session

    async def credentials() -> Any:
        return sdk.SandboxCredentials(token=TOKEN, team_id=None, project_id="bench")  # type: ignore[arg-type]

    options = sdk.SandboxServiceOptions(base_url=url, credentials_factory=credentials)
    async with session(service_options=[options]):
        yield sdk


async def bench(url: str, n: int) -> dict[str, dict[str, Any]]:
    home = Path(tempfile.mkdtemp(prefix="cerver-bench-vercel-"))
    settings = Settings(
        home=home, database_url=f"sqlite:///{home / 'unused.db'}", vercel_api_url=url
    )
    adapter = registry.get("vercel")(settings, {"vercel_token": TOKEN})
    spec = SandboxSpec(account_id="acct_bench")
    samples: dict[str, dict[str, list[float]]] = {}

    def note(op: str, side: str, ms: float) -> None:
        samples.setdefault(op, {"cerver": [], "sdk": []})[side].append(ms)

    async with sdk_session(url) as sdk:
        for _ in range(max(3, n // 3)):  # creates are slow (a real sandbox each)
            ms, record = await timed(lambda: adapter.create_sandbox(spec))
            note("create", "cerver", ms)
            await adapter.delete_sandbox(record)
            ms, made = await timed(lambda: sdk.create_sandbox(persistent=True))
            note("create", "sdk", ms)
            await made.destroy()

        record = await adapter.create_sandbox(spec)
        sandbox = await sdk.get_sandbox(name=record.sandbox_id)
        shell, echo = ExecRequest(code="true"), ExecRequest(code="echo x")
        try:
            await adapter.run(record, shell)  # warm both paths once
            await sandbox.run_process("bash", ["-c", "true"], capture_output=True)
            for _ in range(n):
                note("run shell", "cerver", (await timed(lambda: adapter.run(record, shell)))[0])
                ms, _ = await timed(
                    lambda: sandbox.run_process("bash", ["-c", "true"], capture_output=True)
                )
                note("run shell", "sdk", ms)

                async def cerver_stream(seen: asyncio.Event) -> None:
                    async for event in adapter.run_stream(record, echo):
                        if event.type == "stdout":
                            seen.set()

                async def sdk_stream(seen: asyncio.Event) -> None:
                    await sandbox.run_process("bash", ["-c", "echo x"], stdout=_Signal(seen))  # type: ignore[arg-type]

                note("stream open", "cerver", await first_event_ms(cerver_stream))
                note("stream open", "sdk", await first_event_ms(sdk_stream))
        finally:
            await adapter.delete_sandbox(record)
            await adapter.close()

    return compare(samples)


def main() -> None:
    main_against_fake(
        "vercel",
        bench,
        RESULTS,
        "vercel adapter vs official vercel-sandbox SDK, same fake Vercel on loopback, interleaved",
        description=__doc__.splitlines()[0],
    )


if __name__ == "__main__":
    main()
