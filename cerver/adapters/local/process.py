"""Run one sandboxed process: capped output, timeout, process-tree kill, streaming, reaping.

Every sandboxed process is the leader of a new session (its own process group); in bwrap
mode the group also holds bwrap's pid-namespace init, whose death takes the whole
namespace with it. A run's processes do not outlive it: when the main process exits,
whatever it left in its group is killed. This process is made a child subreaper, so
killed grandchildren are reparented to us instead of to init (which, in a container, may
never reap them) and we reap them here: only zombies of our sandboxes (a pgid we
created, or a uid other than ours), never other children of this process.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Protocol

from cerver.adapters.base import ExecEvent, ExecResult
from cerver.adapters.local.isolation import Launch, enable_subreaper
from cerver.errors import ProviderError, SandboxLost

READ_CHUNK = 64 * 1024
DRAIN_GRACE_S = 1.0
KILL_WAIT_S = 3.0
TIMEOUT_EXIT_CODE = 124

_direct_children: set[int] = set()  # awaited by asyncio: never reap these ourselves
_our_pgids: set[int] = set()
_subreaper = False
_reapers: dict[asyncio.AbstractEventLoop, asyncio.Task[None]] = {}
REAP_BACKOFF_S = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)


def ensure_subreaper() -> None:
    global _subreaper
    if not _subreaper:
        enable_subreaper()
        _subreaper = True


# --------------------------------------------------------------------------- spawning


class _Protocol(asyncio.subprocess.SubprocessStreamProtocol):
    """Knows when the process exited, even while something else still holds its pipes
    (``Process.wait()`` also waits for the pipes to close)."""

    def __init__(self, limit: int, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=limit, loop=loop)
        self.exited = asyncio.Event()

    def process_exited(self) -> None:
        super().process_exited()
        self.exited.set()


def exited_event(proc: asyncio.subprocess.Process) -> asyncio.Event:
    protocol = proc._protocol  # type: ignore[attr-defined]
    assert isinstance(protocol, _Protocol)
    return protocol.exited


async def spawn(launch: Launch, *, stdin: int = subprocess.DEVNULL) -> asyncio.subprocess.Process:
    ensure_subreaper()
    if not os.path.isdir(launch.cwd):
        raise SandboxLost(
            f"sandbox workspace {launch.cwd} is gone", details={"workspace": launch.cwd}
        )
    loop = asyncio.get_running_loop()
    try:
        transport, protocol = await loop.subprocess_exec(
            lambda: _Protocol(READ_CHUNK, loop),
            *launch.argv,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=launch.env,
            cwd=launch.cwd,
            preexec_fn=launch.setup,
            start_new_session=True,
            pass_fds=launch.pass_fds,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise ProviderError(f"could not start the sandbox process: {exc}") from exc
    proc = asyncio.subprocess.Process(transport, protocol, loop)
    _direct_children.add(proc.pid)
    _our_pgids.add(proc.pid)
    return proc


def exit_code_of(returncode: int | None) -> int:
    if returncode is None:
        return -1
    return 128 - returncode if returncode < 0 else returncode


# --------------------------------------------------------------------------- killing


def _proc_stat(pid: str) -> tuple[str, int, int] | None:
    """(state, ppid, pgrp) of a process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2 :].split()
    return fields[0].decode(), int(fields[1]), int(fields[2])


def reap_orphans() -> int:
    """Reap zombie children of ours that came from sandboxes; return how many such
    orphans are still alive (dying: reap again later)."""
    me, my_uid, alive = os.getpid(), os.geteuid(), 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) in _direct_children:
            continue
        stat = _proc_stat(entry.name)
        if stat is None or stat[1] != me:
            continue
        try:
            foreign = entry.stat().st_uid != my_uid
        except FileNotFoundError:
            continue
        if not (foreign or stat[2] in _our_pgids):
            continue
        if stat[0] != "Z":
            alive += 1
            continue
        with contextlib.suppress(ChildProcessError):
            os.waitpid(int(entry.name), os.WNOHANG)
    return alive


def schedule_reap() -> None:
    """Reap sandbox orphans in the background until none is left (e.g. bwrap's pid-1 init,
    which outlives the bwrap we spawned while its namespace is torn down)."""
    loop = asyncio.get_running_loop()
    task = _reapers.get(loop)
    if task is None or task.done():
        _reapers[loop] = loop.create_task(_reap_until_clean())
        for other in [k for k, t in _reapers.items() if t.done()]:
            del _reapers[other]


async def _reap_until_clean() -> None:
    step = 0
    while True:
        await asyncio.sleep(REAP_BACKOFF_S[min(step, len(REAP_BACKOFF_S) - 1)])
        if reap_orphans() == 0 and step >= 2:
            return
        step += 1


def adopt_pgid(pgid: int) -> None:
    """A process group started on our behalf (by a sandbox supervisor, rlimits mode): its
    orphans are reparented to us and ours to reap."""
    _our_pgids.add(pgid)


def signal_group(pgid: int, sig: int = signal.SIGKILL) -> bool:
    """Signal a process group; False when it has no member left."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        _our_pgids.discard(pgid)
        return False
    except PermissionError:
        return True
    return True


async def kill_group(pgid: int, *, timeout_s: float = KILL_WAIT_S) -> bool:
    """SIGKILL a process group until it is empty (fork bombs re-spawn); True when it is."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while signal_group(pgid):
        reap_orphans()
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.01)
    reap_orphans()
    return True


async def kill_process(proc: asyncio.subprocess.Process) -> None:
    """Kill a spawned process and its whole group, and reap them."""
    # The process first: Popen.send_signal polls (reaps) it, which must not find a zombie
    # made by our killpg, or asyncio's child watcher loses its exit status.
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    signal_group(proc.pid)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(exited_event(proc).wait(), KILL_WAIT_S)
    _direct_children.discard(proc.pid)
    await kill_group(proc.pid)


def kill_uid(uid: int) -> int:
    """SIGKILL every process running as ``uid`` (a dedicated sandbox uid); return the count."""
    killed = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
            os.kill(int(entry.name), signal.SIGKILL)
            killed += 1
        except (FileNotFoundError, ProcessLookupError):
            continue
    return killed


# --------------------------------------------------------------------------- output


@dataclass
class StreamCapture:
    """One stream of one run: keeps at most ``limit`` bytes, counts what it drops."""

    name: str
    limit: int
    kept: int = 0
    dropped: int = 0
    parts: list[str] = field(default_factory=list)
    decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace")
    )

    def admit(self, data: bytes) -> bytes:
        room = max(self.limit - self.kept, 0)
        if len(data) > room:
            self.dropped += len(data) - room
            data = data[:room]
        self.kept += len(data)
        return data

    def decode(self, data: bytes, *, final: bool = False) -> str:
        text = self.decoder.decode(data, final)
        if text:
            self.parts.append(text)
        return text

    def finish(self) -> str:
        """Flush the decoder and add the truncation marker; return the text to still emit."""
        tail = self.decode(b"", final=True)
        if self.dropped:
            marker = f"\n[cerver: output truncated, {self.dropped} bytes dropped]"
            self.parts.append(marker)
            tail += marker
        return tail

    @property
    def text(self) -> str:
        return "".join(self.parts)


def timeout_note(timeout_s: float) -> str:
    return f"execution timed out after {timeout_s:g}s"


@dataclass
class Outcome:
    """What a run collected; turned into the final ``ExecResult``."""

    stdout: StreamCapture
    stderr: StreamCapture
    started: float = field(default_factory=time.perf_counter)
    exit_code: int = 0
    timed_out: bool = False
    error: str | None = None
    interpreter_restarted: bool = False

    def note_stderr(self, text: str) -> ExecEvent:
        self.stderr.parts.append(text)
        return ExecEvent(type="stderr", data=text)

    def result(self) -> ExecResult:
        return ExecResult(
            stdout=self.stdout.text,
            stderr=self.stderr.text,
            exit_code=self.exit_code,
            duration_ms=(time.perf_counter() - self.started) * 1000,
            timed_out=self.timed_out,
            truncated=bool(self.stdout.dropped or self.stderr.dropped),
            error=self.error,
            interpreter_restarted=self.interpreter_restarted,
        )


def finish_events(outcome: Outcome) -> list[ExecEvent]:
    events = []
    for cap in (outcome.stdout, outcome.stderr):
        tail = cap.finish()
        if tail:
            events.append(ExecEvent(type="stdout" if cap.name == "stdout" else "stderr", data=tail))
    return events


# --------------------------------------------------------------------------- one run


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
        _direct_children.discard(self._proc.pid)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self._proc.kill()  # before the group: see ``kill_process``
        signal_group(self._proc.pid)

    async def kill_leftovers(self) -> None:
        if signal_group(self._proc.pid):  # leftovers of this run: background jobs
            await kill_group(self._proc.pid)

    async def release(self) -> None:
        proc = self._proc
        if proc.returncode is None or signal_group(proc.pid, 0):
            await kill_process(proc)
        _direct_children.discard(proc.pid)
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
    launch: Launch, *, timeout_s: float, output_limit: int, track: set[int] | None = None
) -> AsyncGenerator[ExecEvent, None]:
    """Spawn ``launch`` and run it to completion as events (see ``stream_run``).

    ``track`` (optional) holds the process group ids of the runs in progress, so their
    owner can kill them all (``delete_sandbox``).
    """
    proc = await spawn(launch)
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
    open_streams, exited = 2, False
    try:
        while open_streams or not exited:
            remaining = deadline - loop.time()
            if remaining <= 0:
                if exited:
                    break  # an escaped process holds the pipes open: stop waiting for them
                outcome.timed_out = True
                handle.kill()
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
