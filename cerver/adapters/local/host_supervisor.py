"""The host side of a sandbox's supervisor (the program inside is ``inside/supervisor.py``).

One ``Supervisor`` per sandbox per adapter instance: a single confined process started
once (bwrap, mount hiding, uid drop, rlimits), through which every run of the sandbox is
spawned: shell and node commands, and the persistent Python interpreter. A
``RemoteProcess`` is one such run seen from the host: its stdout, stderr and control
output as ``asyncio.StreamReader``s, its stdin, its exit, and a kill of its whole
process group. If the supervisor dies, every run it had ends (exit ``-9``) and the next
``Supervisor.start()`` launches a fresh one.

Everything the supervisor writes back is the sandbox's word: user code runs as the same
uid and can write its own frames into the supervisor's pipe (``/proc/<pid>/fd/1``). So
frames are capped (``MAX_FRAME_BYTES``) and must parse, and a violation is fatal for the
sandbox (its processes are killed, the next run starts a fresh supervisor); no pid from a
frame is ever signalled as is (rlimits mode: only a group checked in ``/proc`` to be a
child of our supervisor, started before its frame arrived); and every wait on the
supervisor has a deadline, past which the whole sandbox is killed and replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from cerver.adapters.local import inside
from cerver.adapters.local.isolation import Launch
from cerver.adapters.local.reaping import (
    KILL_WAIT_S,
    adopt_pgid,
    child_group_of,
    schedule_reap,
    signal_verified_group,
)
from cerver.adapters.local.spawning import exited_event, kill_process, spawn
from cerver.errors import ProviderError

log = logging.getLogger(__name__)
SUPERVISOR_SOURCE = inside.source("supervisor")
HEADER = struct.Struct("!cII")
START_TIMEOUT_S = 15.0
START_STDERR_BYTES = 2000
READER_LIMIT = 64 * 1024
MAX_FRAME_BYTES = 1024 * 1024  # the supervisor sends at most 64 KiB of output per frame
MAX_CTL_LINE = 1024 * 1024  # one JSON line of a run's control channel (the Python driver)
OPEN_TIMEOUT_S = 10.0  # for the supervisor to answer a run request
SEND_TIMEOUT_S = 5.0  # for the supervisor to take a frame off its pipe
STREAM_KINDS = {b"O": "stdout", b"E": "stderr", b"C": "ctl"}
KILLED_RETURNCODE = -9

LaunchBuilder = Callable[[list[str]], Launch]
KillAll = Callable[[], Awaitable[None]]


class ProtocolViolation(Exception):
    """The sandbox wrote something on its control channel that the protocol does not allow."""


class SupervisorHung(ProviderError):
    """The supervisor did not answer in time: it was killed with everything of the sandbox."""


def _json_object(payload: bytes) -> dict[str, Any]:
    msg = json.loads(payload) if payload else {}
    if not isinstance(msg, dict):
        raise ProtocolViolation("a control frame that is not a JSON object")
    return msg


def _int(msg: dict[str, Any], key: str) -> int:
    value = msg.get(key)
    if type(value) is not int or abs(value) >= 2**63:
        raise ProtocolViolation(f"a control frame with a bad {key!r}")
    return value


async def _start_stderr(proc: asyncio.subprocess.Process) -> str:
    """What a supervisor that failed to start wrote on stderr (bwrap's or Python's own
    complaint; nothing of user code has run yet), at most ``START_STDERR_BYTES``."""
    if proc.stderr is None:
        return ""
    try:
        said = await asyncio.wait_for(proc.stderr.read(START_STDERR_BYTES), 0.5)
    except (TimeoutError, OSError, ValueError):
        return ""
    return said.decode("utf-8", "replace").strip()


def supervisor_argv(python: str) -> list[str]:
    # -I -S: stdlib only, so skip ``site`` (most of Python's start-up on this node)
    return [python, "-I", "-S", "-u", "-c", SUPERVISOR_SOURCE]


class RemoteProcess:
    """One run spawned by a supervisor. ``pid`` is as the sandbox sees it."""

    def __init__(self, supervisor: Supervisor, chan: int, *, ctl: bool) -> None:
        self._supervisor = supervisor
        self.chan = chan
        self.pid = 0  # the sandbox's word: shown, never signalled
        self.group: tuple[int, int] | None = None  # rlimits: (pgid, start time), checked
        self.returncode: int | None = None
        self.exited = asyncio.Event()
        self.stdout: asyncio.StreamReader = asyncio.StreamReader(limit=READER_LIMIT)
        self.stderr: asyncio.StreamReader = asyncio.StreamReader(limit=READER_LIMIT)
        self.ctl: asyncio.StreamReader | None = (
            asyncio.StreamReader(limit=MAX_CTL_LINE) if ctl else None
        )
        self.started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._dropped = {"stdout": 0, "stderr": 0}
        self._open = {"stdout", "stderr"} | ({"ctl"} if ctl else set())

    # -- fed by the supervisor's reader

    def _reader(self, stream: str) -> asyncio.StreamReader | None:
        return {"stdout": self.stdout, "stderr": self.stderr, "ctl": self.ctl}[stream]

    def _closed(self, stream: str, dropped: int) -> None:
        if stream in self._open:
            self._open.discard(stream)
            if stream in self._dropped:
                self._dropped[stream] = dropped
            reader = self._reader(stream)
            if reader is not None:
                reader.feed_eof()

    def _exit(self, returncode: int) -> None:
        if self.returncode is None:
            self.returncode = returncode
        self.exited.set()

    def _lost(self, note: str | None = None) -> None:
        if not self.started.done():
            self.started.set_exception(ProviderError(note or "the sandbox supervisor exited"))
        if note and "stderr" in self._open:
            self.stderr.feed_data(f"\n[cerver: {note}]\n".encode())
        for stream in list(self._open):
            self._closed(stream, 0)
        self._exit(KILLED_RETURNCODE)

    @property
    def finished(self) -> bool:
        return self.exited.is_set() and not self._open

    # -- the RunHandle interface of ``process.stream_run``

    async def wait_exit(self) -> None:
        await self.exited.wait()

    def kill(self) -> None:
        self._supervisor.send(b"K", self.chan)

    async def kill_leftovers(self) -> None:
        """Nothing to do: the supervisor empties a run's group before it reports the exit."""

    async def escalate(self) -> None:
        """The kill was not answered: kill the whole sandbox (the supervisor and, with it,
        the namespace); the run ends and the next one starts a fresh supervisor."""
        await self._supervisor.stop(
            "the sandbox did not answer a kill; all its processes were killed, and the "
            "next run starts them afresh"
        )

    def dropped(self, stream: str) -> int:
        return self._dropped.get(stream, 0)

    async def release(self) -> None:
        """The run is over for its consumer: nothing of it may remain."""
        if not self.finished:
            self._supervisor.send(b"D", self.chan)
        self._supervisor.forget(self.chan)

    # -- for long-lived runs (the Python interpreter)

    async def write(self, data: bytes) -> None:
        await self._supervisor.send_and_drain(b"I", self.chan, data)

    async def terminate(self) -> None:
        """Kill the run's group and wait (bounded) for its exit; a hung supervisor is stopped."""
        if self.exited.is_set():
            await self.release()
            return
        self.kill()
        try:
            await asyncio.wait_for(self.exited.wait(), KILL_WAIT_S)
        except TimeoutError:
            await self._supervisor.stop()
        await self.release()


@dataclass(frozen=True)
class ShellTemplate:
    """How the supervisor arms shells: bash, the sandbox's base environment, its workspace."""

    bash: str
    env: dict[str, str]
    cwd: str


class Supervisor:
    def __init__(
        self, python: str, build: LaunchBuilder, shell: ShellTemplate,
        kill_all: KillAll | None = None,
    ) -> None:  # fmt: skip
        self._python = python
        self._kill_all = kill_all  # everything of the sandbox (its cgroup): the last resort
        self._build = build
        self._shell = shell
        self._proc: asyncio.subprocess.Process | None = None
        self._pidns = False
        self._reader: asyncio.Task[None] | None = None
        self._runs: dict[int, RemoteProcess] = {}
        self._next_chan = 1
        self._ready: asyncio.Future[None] | None = None
        self._lock = asyncio.Lock()
        self.fault: str | None = None  # why the last supervisor was killed, if we killed it
        self._armed = False  # the shell template ("A") was sent: runs may be opened

    @property
    def _running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None and self._reader is not None

    @property
    def alive(self) -> bool:
        # Not before the shell template was sent: a run opened earlier (a second caller while
        # the first starts it) reached the supervisor unarmed and failed with KeyError 'bash'.
        return self._armed and self._running

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def ensure_started(self) -> bool:
        """Start the supervisor unless it runs; True when a new one was started."""
        if self.alive:
            return False
        async with self._lock:
            if self.alive:
                return False
            await self._start()
            return True

    async def _start(self) -> None:
        await self.stop()
        self._armed = False
        argv = supervisor_argv(self._python)
        launch = self._build(argv)
        proc = await spawn(launch, stdin=asyncio.subprocess.PIPE, rebuild=lambda: self._build(argv))
        self._proc, self._pidns = proc, launch.pidns
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        self._reader = asyncio.create_task(self._read_frames(proc))
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), START_TIMEOUT_S)
        except (TimeoutError, ProviderError) as exc:
            said = ""
            if not isinstance(exc, TimeoutError):  # it exited: how, and what it said
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(exited_event(proc).wait(), 1.0)
                said = await _start_stderr(proc)
            status = proc.returncode  # before our own kill below
            await self.stop()
            ready = self._ready
            if ready is not None and ready.done() and not ready.cancelled():
                ready.exception()  # retrieved: the reader's late "exited at start" is this
            why = str(exc) or f"no answer within {START_TIMEOUT_S:g}s"
            log.warning("sandbox supervisor did not start (%s, exit %s): %s", why, status, said)
            # What it said (bwrap's complaint names host paths) stays in the server's log.
            raise ProviderError(
                f"the sandbox supervisor did not start: {why}"
                + (f" (exit status {status})" if status is not None else ""),
                details={"exit_status": status},
            ) from exc
        self.send(b"A", 0, json.dumps(dataclasses.asdict(self._shell)).encode())
        self._armed = True

    async def stop(self, note: str | None = None) -> None:
        """Kill the supervisor and every run of it; ``note`` says why, to those runs."""
        proc, self._proc = self._proc, None
        reader, self._reader = self._reader, None
        if note is not None:
            self.fault = note
            log.warning("sandbox supervisor killed: %s", note)
        if proc is not None:
            await kill_process(proc)
            if note is not None and self._kill_all is not None:
                await self._kill_all()  # what left the namespace or the group
            schedule_reap()
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        self._lose_runs(note)

    def _lose_runs(self, note: str | None = None) -> None:
        runs, self._runs = self._runs, {}
        for run in runs.values():
            if run.group is not None:
                signal_verified_group(*run.group)  # rlimits mode: checked, never the frame's
            run._lost(note)

    # ------------------------------------------------------------------ runs

    async def spawn(
        self, argv: list[str], *, env: dict[str, str], cwd: str, stdin: bool = False,
        ctl: bool = False, limit: int = 0,
    ) -> RemoteProcess:  # fmt: skip
        """Start one run; ``limit`` caps each output stream (0: no cap, e.g. the REPL)."""
        msg = {"argv": argv, "env": env, "cwd": cwd, "stdin": stdin, "ctl": ctl, "limit": limit}
        return await self._open(msg, ctl=ctl)

    async def run_shell(
        self, code: str, *, env: dict[str, str], cwd: str, limit: int
    ) -> RemoteProcess:
        """A bash run handed to an armed shell; ``env`` is added to the base environment."""
        shell = {"code": code, "env": env, "cwd": cwd}
        return await self._open({"shell": shell, "limit": limit}, ctl=False)

    async def _open(self, msg: dict[str, Any], *, ctl: bool) -> RemoteProcess:
        if not self.alive:
            raise ProviderError("the sandbox supervisor is not running")
        chan = self._next_chan
        self._next_chan += 1
        run = RemoteProcess(self, chan, ctl=ctl)
        self._runs[chan] = run
        try:
            await self.send_and_drain(b"R", chan, json.dumps(msg).encode())
            async with asyncio.timeout(OPEN_TIMEOUT_S):
                await run.started
        except TimeoutError:
            self._runs.pop(chan, None)
            note = f"the sandbox supervisor did not answer a run request in {OPEN_TIMEOUT_S:g}s"
            await self.stop(f"{note}; all its processes were killed")
            raise SupervisorHung(note) from None
        except ProviderError:
            self._runs.pop(chan, None)
            raise
        if run.group is not None:
            adopt_pgid(run.group[0])
        return run

    def forget(self, chan: int) -> None:
        self._runs.pop(chan, None)

    def send(self, kind: bytes, chan: int, payload: bytes = b"") -> None:
        proc = self._proc
        if not self._running or proc is None or proc.stdin is None or proc.stdin.is_closing():
            return
        proc.stdin.write(HEADER.pack(kind, chan, len(payload)) + payload)

    async def send_and_drain(self, kind: bytes, chan: int, payload: bytes) -> None:
        """Send a frame and wait (bounded) until the pipe takes it; a supervisor that does
        not read its pipe (stopped) is killed with its sandbox."""
        self.send(kind, chan, payload)
        proc = self._proc
        if proc is not None and proc.stdin is not None:
            try:
                async with asyncio.timeout(SEND_TIMEOUT_S):
                    await proc.stdin.drain()
            except ConnectionError:
                pass
            except TimeoutError:
                note = f"the sandbox supervisor did not read its input for {SEND_TIMEOUT_S:g}s"
                await self.stop(f"{note}; all its processes were killed")
                raise SupervisorHung(note) from None

    # ------------------------------------------------------------------ frames

    async def _read_frames(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        reader = proc.stdout
        try:
            while True:
                kind, chan, size = HEADER.unpack(await reader.readexactly(HEADER.size))
                if size > MAX_FRAME_BYTES:
                    raise ProtocolViolation(f"a frame of {size} bytes (limit {MAX_FRAME_BYTES})")
                payload = await reader.readexactly(size) if size else b""
                self._dispatch(kind, chan, payload)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the supervisor exited
        except (ProtocolViolation, struct.error, ValueError, TypeError) as exc:
            if self._proc is proc:
                await self.stop(
                    f"the sandbox broke its control protocol ({exc}); all its processes were killed"
                )
        finally:
            if self._ready is not None and not self._ready.done():
                self._ready.set_exception(ProviderError("the supervisor exited at start"))
            if self._proc is proc:
                self._reader = None  # not alive any more; the next ensure_started replaces it
                self._lose_runs()

    def _dispatch(self, kind: bytes, chan: int, payload: bytes) -> None:
        if kind == b"H":
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(None)
            return
        run = self._runs.get(chan)
        if run is None:
            return
        stream = STREAM_KINDS.get(kind)
        if stream is not None:
            target = run._reader(stream)
            if target is not None:
                target.feed_data(payload)
            return
        msg = _json_object(payload)
        if kind == b"S":
            run.pid = _int(msg, "pid")
            if not self._pidns and run.group is None and self._proc is not None:
                run.group = child_group_of(run.pid, self._proc.pid)
            if not run.started.done():
                run.started.set_result(None)
        elif kind == b"F":
            if not run.started.done():
                error = str(msg.get("error"))[:1000]
                run.started.set_exception(
                    ProviderError(f"could not start the sandboxed process: {error}")
                )
        elif kind == b"Z":
            if msg.get("stream") not in ("stdout", "stderr", "ctl"):
                raise ProtocolViolation("a close frame for an unknown stream")
            run._closed(str(msg["stream"]), max(_int(msg, "dropped"), 0))
        elif kind == b"X":
            run._exit(_int(msg, "returncode"))
        else:
            raise ProtocolViolation(f"an unknown frame kind {kind!r}")
