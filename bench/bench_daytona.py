"""Cerver's own overhead per daytona operation: the daytona adapter vs the official
``daytona`` SDK called directly, both against the same fake Daytona
(tests/fakes/daytona.py) with no added latency.

    python bench/bench_daytona.py [--n 30]

Operations, each timed both ways and interleaved (so machine load hits both alike):
  create       adapter.create_sandbox        vs  AsyncDaytona.create(params)
  run shell    adapter.run("true")           vs  sandbox.process.exec("true")
  run python   adapter.run("pass", python)   vs  sandbox.code_interpreter.run_code("pass")
  stream open  first stdout event of adapter.run_stream("echo x")  vs  the first stdout
               chunk of a session command's log stream (create_session,
               execute_session_command(run_async), get_session_command_logs_async)
What the adapter adds is on purpose: it looks the sandbox up on every call (one GET, so
a restarted host reconnects from the record and a stopped sandbox is started), and a
shell run gets a session of its own (create, exec, logs, exit code, delete) so stdout and
stderr stay apart and a run cut short is killed; ``process.exec`` returns them mixed.
The fake's own work (a real local sandbox per Daytona sandbox) is in both columns.
Prints p50/p95/p99; writes bench/results/daytona.json. Measured on a shared, loaded
machine: compare the columns, not absolute numbers.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _side_by_side import compare, main_against_fake
from bench_e2b import first_event_ms  # bench/ is the script's directory
from bench_local_adapter import timed

from cerver.adapters import registry
from cerver.adapters.base import ExecRequest, SandboxSpec
from cerver.config import Settings

RESULTS = Path(__file__).parent / "results" / "daytona.json"
KEY = "daytona_bench_key"


async def bench(url: str, n: int) -> dict[str, dict[str, Any]]:
    import daytona as sdk

    home = Path(tempfile.mkdtemp(prefix="cerver-bench-daytona-"))
    settings = Settings(
        home=home, database_url=f"sqlite:///{home / 'unused.db'}", daytona_api_url=url
    )
    adapter = registry.get("daytona")(settings, {"daytona_api_key": KEY})
    client = sdk.AsyncDaytona(sdk.DaytonaConfig(api_key=KEY, api_url=url))
    spec = SandboxSpec(account_id="acct_bench")
    samples: dict[str, dict[str, list[float]]] = {}

    def note(op: str, side: str, ms: float) -> None:
        samples.setdefault(op, {"cerver": [], "sdk": []})[side].append(ms)

    def params() -> Any:
        return sdk.CreateSandboxFromSnapshotParams(language="python", network_block_all=True)

    try:
        for _ in range(max(3, n // 3)):  # creates are slow (a real sandbox each)
            ms, record = await timed(lambda: adapter.create_sandbox(spec))
            note("create", "cerver", ms)
            await adapter.delete_sandbox(record)
            ms, made = await timed(lambda: client.create(params()))
            note("create", "sdk", ms)
            await made.delete()

        record = await adapter.create_sandbox(spec)
        sandbox = await client.get(record.sandbox_id)
        shell, echo = ExecRequest(code="true"), ExecRequest(code="echo x")
        python = ExecRequest(code="pass", language="python")
        try:
            await adapter.run(record, shell)  # warm both paths once
            await sandbox.process.exec("true")
            for i in range(n):
                note("run shell", "cerver", (await timed(lambda: adapter.run(record, shell)))[0])
                note("run shell", "sdk", (await timed(lambda: sandbox.process.exec("true")))[0])
                ms, _ = await timed(lambda: adapter.run(record, python))
                note("run python", "cerver", ms)
                ms, _ = await timed(lambda: sandbox.code_interpreter.run_code("pass"))
                note("run python", "sdk", ms)

                async def cerver_stream(seen: asyncio.Event) -> None:
                    async for event in adapter.run_stream(record, echo):
                        if event.type == "stdout":
                            seen.set()

                async def sdk_stream(seen: asyncio.Event, i: int = i) -> None:
                    session = f"bench-{i}"
                    await sandbox.process.create_session(session)
                    command = await sandbox.process.execute_session_command(
                        session, sdk.SessionExecuteRequest(command="echo x", run_async=True)
                    )
                    await sandbox.process.get_session_command_logs_async(
                        session, command.cmd_id, lambda _text: seen.set(), lambda _text: None
                    )
                    await sandbox.process.delete_session(session)

                note("stream open", "cerver", await first_event_ms(cerver_stream))
                note("stream open", "sdk", await first_event_ms(sdk_stream))
        finally:
            await adapter.delete_sandbox(record)
    finally:
        await adapter.close()
        await client.close()
    return compare(samples)


def main() -> None:
    main_against_fake(
        "daytona",
        bench,
        RESULTS,
        "daytona adapter vs official daytona SDK, same fake Daytona on loopback, interleaved",
        description=__doc__.splitlines()[0],
    )


if __name__ == "__main__":
    main()
