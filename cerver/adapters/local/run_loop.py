"""The run loop: one started run to completion as events, with its timeout and kill.

A run's processes do not outlive it: when the main process exits, whatever it left in
its group is killed; closing the event generator early kills the whole tree.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable
from typing import Protocol

from cerver.adapters.base import ExecEvent, ExecResult
from cerver.adapters.local.capture import (
    READ_CHUNK,
    Outcome,
    StreamCapture,
    finish_events,
    timeout_note,
)
from cerver.adapters.local.isolation import Launch
from cerver.adapters.local.reaping import (
    KILL_WAIT_S,
    direct_children,
    kill_group,
    schedule_reap,
    signal_group,
)
from cerver.adapters.local.spawning import exit_code_of, exited_event, kill_process, spawn
from cerver.errors import ProviderError

DRAIN_GRACE_S = 1.0
TIMEOUT_EXIT_CODE = 124


async def _pump(
    reader: asyncio.StreamReader | None,
    cap: StreamCapture,
    queue: asyncio.Queue[tuple[str, bytes | None]],
) -> None:
    if reader is None:
        await queue.put((cap.name, None))
        return
    while True:
        data = await reader.read(READ_CHUNK)
        if not data:
            break
        kept = cap.admit(data)
        if kept:
            await queue.put((cap.name, kept))
    await queue.put((cap.name, None))


class RunHandle(Protocol):
    """One run in progress, however it was started (a local spawn or a supervisor run)."""

    @property
    def stdout(self) -> asyncio.StreamReader | None: ...

    @property
    def stderr(self) -> asyncio.StreamReader | None: ...

    @property
    def returncode(self) -> int | None: ...

    async def wait_exit(self) -> None: ...

    def kill(self) -> None:
        """Start killing the run's whole process tree."""

    async def kill_leftovers(self) -> None:
        """After the main process exited: kill what it left in its group."""

    async def escalate(self) -> None:
        """A kill was not answered in time: kill everything of the run's sandbox."""

    async def release(self) -> None:
        """The consumer is done (or gone): nothing of the run may remain."""

    def dropped(self, stream: str) -> int:
        """Output bytes dropped before reaching us (beyond the cap)."""


class _LocalRun:
    """A process we spawned ourselves (``spawn``)."""

    def __init__(
        self, proc: asyncio.subprocess.Process, *, pidns: bool, track: set[int] | None
    ) -> None:
        self._proc = proc
        self._pidns = pidns
        self._track = track
        if track is not None:
            track.add(proc.pid)

    @property
    def stdout(self) -> asyncio.StreamReader | None:
        return self._proc.stdout

    @property
    def stderr(self) -> asyncio.StreamReader | None:
        return self._proc.stderr

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode

    async def wait_exit(self) -> None:
        await exited_event(self._proc).wait()
        direct_children.discard(self._proc.pid)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self._proc.kill()  # before the group: see ``kill_process``
        signal_group(self._proc.pid)

    async def kill_leftovers(self) -> None:
        if signal_group(self._proc.pid):  # leftovers of this run: background jobs
            await kill_group(self._proc.pid)

    async def escalate(self) -> None:
        await kill_process(self._proc)

    async def release(self) -> None:
        proc = self._proc
        if proc.returncode is None or signal_group(proc.pid, 0):
            await kill_process(proc)
        direct_children.discard(proc.pid)
        if self._track is not None:
            self._track.discard(proc.pid)
        if self._pidns:
            schedule_reap()

    def dropped(self, stream: str) -> int:
        return 0


async def _await_exit(handle: RunHandle, queue: asyncio.Queue[tuple[str, bytes | None]]) -> None:
    await handle.wait_exit()
    await queue.put(("exit", None))


async def stream_process(
    launch: Launch, *, timeout_s: float, output_limit: int, track: set[int] | None = None,
    rebuild: Callable[[], Launch] | None = None,
) -> AsyncGenerator[ExecEvent, None]:  # fmt: skip
    """Spawn ``launch`` and run it to completion as events (see ``stream_run``).

    ``track`` (optional) holds the process group ids of the runs in progress, so their
    owner can kill them all (``delete_sandbox``); ``rebuild`` makes the launch again when
    its cgroup vanished before the start (``spawn``).
    """
    proc = await spawn(launch, rebuild=rebuild)
    handle = _LocalRun(proc, pidns=launch.pidns, track=track)
    events = stream_run(handle, timeout_s=timeout_s, output_limit=output_limit)
    async with contextlib.aclosing(events):
        async for event in events:
            yield event


async def stream_run(
    handle: RunHandle, *, timeout_s: float, output_limit: int
) -> AsyncGenerator[ExecEvent, None]:
    """A started run as events; closing the generator early kills the whole tree."""
    outcome = Outcome(StreamCapture("stdout", output_limit), StreamCapture("stderr", output_limit))
    queue: asyncio.Queue[tuple[str, bytes | None]] = asyncio.Queue()
    caps = {"stdout": outcome.stdout, "stderr": outcome.stderr}
    tasks = [
        asyncio.create_task(_pump(handle.stdout, outcome.stdout, queue)),
        asyncio.create_task(_pump(handle.stderr, outcome.stderr, queue)),
        asyncio.create_task(_await_exit(handle, queue)),
    ]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    open_streams, exited, escalated = 2, False, False
    try:
        while open_streams or not exited:
            remaining = deadline - loop.time()
            if remaining <= 0:
                if exited:
                    break  # an escaped process holds the pipes open: stop waiting for them
                if not outcome.timed_out:
                    outcome.timed_out = True
                    handle.kill()
                elif not escalated:  # the kill was not answered (a stopped supervisor)
                    escalated = True
                    await handle.escalate()
                else:
                    break  # nothing answers any more: report what we have
                deadline = loop.time() + KILL_WAIT_S
                continue
            try:
                kind, data = await asyncio.wait_for(queue.get(), remaining)
            except TimeoutError:
                continue
            if kind == "exit":
                exited = True
                await handle.kill_leftovers()
                deadline = loop.time() + DRAIN_GRACE_S
            elif data is None:
                open_streams -= 1
            else:
                text = caps[kind].decode(data)
                if text:
                    yield ExecEvent(type="stdout" if kind == "stdout" else "stderr", data=text)
        outcome.exit_code = exit_code_of(handle.returncode)
        for cap in (outcome.stdout, outcome.stderr):
            cap.dropped += handle.dropped(cap.name)
        for event in finish_events(outcome):
            yield event
        if outcome.timed_out:
            outcome.exit_code = TIMEOUT_EXIT_CODE
            outcome.error = timeout_note(timeout_s)
            yield outcome.note_stderr(f"\n[cerver: {outcome.error}; process tree killed]\n")
        yield ExecEvent(type="exit", result=outcome.result())
    finally:
        await handle.release()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def collect(events: AsyncGenerator[ExecEvent, None]) -> ExecResult:
    """Consume a run's events and return its final result."""
    result: ExecResult | None = None
    async with contextlib.aclosing(events):
        async for event in events:
            if event.type == "exit":
                result = event.result
    if result is None:
        raise ProviderError("the sandbox run ended without a result")
    return result
