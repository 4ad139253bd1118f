"""The host side of a sandbox's persistent Python interpreter (``inside/python_driver.py``).

One ``PythonInterpreter`` per sandbox per adapter instance, spawned through the sandbox's
supervisor (``host_supervisor.py``) like any other run. Runs are serialized by the
caller. Each run gets a random token; the run is complete when the driver has reported
its result and the token has come through both stdout and stderr (so no output of the
run arrives after its ``exit`` event). On timeout the cell is interrupted
(KeyboardInterrupt, state kept); if the interpreter does not answer within
``INTERRUPT_GRACE_S`` it is killed and a fresh one started (state lost, and said so).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

from cerver.adapters.base import ExecEvent
from cerver.adapters.local import inside, runtimes
from cerver.adapters.local.capture import (
    READ_CHUNK,
    Outcome,
    StreamCapture,
    finish_events,
    timeout_note,
)
from cerver.adapters.local.host_supervisor import RemoteProcess, Supervisor
from cerver.adapters.local.run_loop import TIMEOUT_EXIT_CODE
from cerver.adapters.local.spawning import exit_code_of
from cerver.errors import ProviderError

DRIVER_SOURCE = inside.source("python_driver")
START_TIMEOUT_S = 15.0
INTERRUPT_GRACE_S = 1.0
MARK_GRACE_S = 2.0
STATE_LOST = "[cerver: the python interpreter {why}; it was restarted and its state was lost]\n"

_MARK = b""  # queue payload meaning "this stream's token arrived"


def driver_argv(python: str, site_dirs: tuple[str, ...]) -> list[str]:
    # -S: no ``site`` (nor the code of its .pth files); the driver puts the installation's
    # site-packages on sys.path itself, from the arguments after the control fd.
    return [python, "-S", "-u", "-c", DRIVER_SOURCE, "{ctl_fd}", *site_dirs]


def _held_back(buf: bytes, token: bytes) -> int:
    """Length of the longest suffix of ``buf`` that could be the start of ``token``."""
    start = buf.find(token[:1], max(0, len(buf) - len(token) + 1))
    while start != -1:
        if token.startswith(buf[start:]):
            return len(buf) - start
        start = buf.find(token[:1], start + 1)
    return 0


@dataclass
class _Run:
    token: bytes
    outcome: Outcome
    queue: asyncio.Queue[tuple[str, Any]] = field(default_factory=asyncio.Queue)
    pending: dict[str, bytes] = field(default_factory=lambda: {"stdout": b"", "stderr": b""})

    def cap(self, name: str) -> StreamCapture:
        return self.outcome.stdout if name == "stdout" else self.outcome.stderr


class PythonInterpreter:
    def __init__(
        self, python: str, supervisor: Supervisor, output_limit: int, *, env: dict[str, str],
        cwd: str,
    ) -> None:  # fmt: skip
        self._python = python
        self._supervisor = supervisor
        self._output_limit = output_limit
        self._env = env
        self._cwd = cwd
        self._proc: RemoteProcess | None = None
        self._starts = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._run: _Run | None = None
        self._ready: asyncio.Future[None] | None = None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def start(self) -> None:
        await self._supervisor.ensure_started()
        # Asked once per process, in a thread: the first answer runs the interpreter.
        site_dirs = await asyncio.to_thread(runtimes.python_site_dirs, self._python)
        proc = await self._supervisor.spawn(
            driver_argv(self._python, site_dirs),
            env=self._env,
            cwd=self._cwd,
            stdin=True,
            ctl=True,
        )
        assert proc.ctl is not None
        control = proc.ctl
        loop = asyncio.get_running_loop()
        self._proc = proc
        self._starts += 1
        self._ready = loop.create_future()
        self._tasks = [
            asyncio.create_task(self._pump(proc.stdout, "stdout")),
            asyncio.create_task(self._pump(proc.stderr, "stderr")),
            asyncio.create_task(self._control(control)),
        ]
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), START_TIMEOUT_S)
        except (TimeoutError, ProviderError) as exc:
            await self.stop()
            raise ProviderError(f"the python interpreter did not start: {exc}") from exc

    async def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            await proc.terminate()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    # ------------------------------------------------------------------ readers

    def _deliver(self, item: tuple[str, Any]) -> None:
        if self._run is not None:
            self._run.queue.put_nowait(item)

    async def _pump(self, reader: asyncio.StreamReader, name: str) -> None:
        while True:
            data = await reader.read(READ_CHUNK)
            if not data:
                self._deliver((name, None))
                return
            run = self._run
            if run is None:
                continue  # output between runs (a background thread): nobody's
            buf = run.pending[name] + data
            idx = buf.find(run.token)
            if idx >= 0:
                run.pending[name] = b""
                self._admit(run, name, buf[:idx])
                run.queue.put_nowait((name, _MARK))
                continue
            hold = _held_back(buf, run.token)
            run.pending[name] = buf[len(buf) - hold :]
            self._admit(run, name, buf[: len(buf) - hold])

    @staticmethod
    def _admit(run: _Run, name: str, data: bytes) -> None:
        kept = run.cap(name).admit(data)
        if kept:
            run.queue.put_nowait((name, kept))

    async def _control(self, reader: asyncio.StreamReader) -> None:
        """Results from the driver: the sandbox's word (user code can write to that pipe),
        so a line that is too long or not a JSON object is fatal for the sandbox."""
        while True:
            try:
                line = await reader.readline()
                msg = json.loads(line) if line else None
                if line and not isinstance(msg, dict):
                    raise ValueError("not a JSON object")
            except ValueError as exc:  # also a line beyond MAX_CTL_LINE
                why = f"broke its control protocol ({str(exc)[:200]})"
                await self._supervisor.stop(f"the python interpreter {why}; all killed")
                self._fail_start()
                self._deliver(("dead", why))
                return
            if msg is None:
                self._fail_start()
                self._deliver(("dead", None))
                return
            if msg.get("ready"):
                if self._ready is not None and not self._ready.done():
                    self._ready.set_result(None)
            else:
                self._deliver(("result", msg))

    def _fail_start(self) -> None:
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(ProviderError("the interpreter exited at start"))

    async def _send(self, msg: dict[str, Any]) -> None:
        if self._proc is None:
            raise ConnectionError("the python interpreter is not running")
        await self._proc.write((json.dumps(msg) + "\n").encode())

    # ------------------------------------------------------------------ one run

    async def execute(
        self,
        code: str,
        *,
        timeout_s: float,
        cwd: str | None,
        path: list[str],
        env: dict[str, str] | None = None,
    ) -> AsyncGenerator[ExecEvent, None]:
        limit = self._output_limit
        outcome = Outcome(StreamCapture("stdout", limit), StreamCapture("stderr", limit))
        lost = None
        if not self.alive:
            if self._starts:  # it ran before: its state is gone, and the run says so
                outcome.interpreter_restarted = True
                lost = outcome.note_stderr(STATE_LOST.format(why="had stopped"))
            await self.start()
        if lost is not None:
            yield lost
        token = f"\x00cerver-end-{secrets.token_hex(8)}\x00"
        run = _Run(token.encode(), outcome)
        self._run = run
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        result: dict[str, Any] | None = None
        marks: set[str] = set()
        interrupted = False
        finished = False
        try:
            await self._send(
                {"op": "exec", "code": code, "token": token, "cwd": cwd, "path": path, "env": env}
            )
            while True:
                if result is not None and all(
                    marked is False or name in marks
                    for name, marked in zip(("stdout", "stderr"), result["marked"], strict=True)
                ):
                    break
                remaining = deadline - loop.time()
                if remaining <= 0:
                    if result is not None:
                        break  # a token got lost (user code wrote a partial line?): stop waiting
                    if not interrupted:
                        interrupted = True
                        outcome.timed_out = True
                        with contextlib.suppress(ProviderError):  # a hung supervisor: killed
                            await self._send({"op": "interrupt"})
                        deadline = loop.time() + INTERRUPT_GRACE_S
                        continue
                    yield await self._restart(outcome, "did not respond to an interrupt")
                    break
                try:
                    kind, data = await asyncio.wait_for(run.queue.get(), remaining)
                except TimeoutError:
                    continue
                if kind == "result":
                    result = data
                    deadline = loop.time() + MARK_GRACE_S
                elif kind == "dead":
                    yield await self._restart(outcome, data or "exited")
                    break
                elif data is None or data == _MARK:
                    marks.add(kind)
                else:
                    text = run.cap(kind).decode(data)
                    if text:
                        yield ExecEvent(type="stdout" if kind == "stdout" else "stderr", data=text)
            if result is not None:
                outcome.exit_code = int(result["exit_code"])
                outcome.error = result["error"]
            for event in finish_events(outcome):
                yield event
            if outcome.timed_out:
                outcome.exit_code = TIMEOUT_EXIT_CODE
                kept = "interrupted, interpreter state kept" if result is not None else "killed"
                outcome.error = f"{timeout_note(timeout_s)} ({kept})"
                yield outcome.note_stderr(f"\n[cerver: {outcome.error}]\n")
            finished = True
            yield ExecEvent(type="exit", result=outcome.result())
        finally:
            self._run = None
            if not finished and result is None and self.alive:
                await self._abandon(run)

    async def _restart(self, outcome: Outcome, why: str) -> ExecEvent:
        proc = self._proc
        await self.stop()
        outcome.exit_code = exit_code_of(proc.returncode if proc else None)
        outcome.interpreter_restarted = True
        event = outcome.note_stderr(STATE_LOST.format(why=why))
        with contextlib.suppress(ProviderError):
            await self.start()
        return event

    async def _abandon(self, run: _Run) -> None:
        """The consumer went away mid-run: interrupt the cell, kill if it will not stop."""
        self._run = run
        try:
            await self._send({"op": "interrupt"})
            async with asyncio.timeout(INTERRUPT_GRACE_S):
                while (await run.queue.get())[0] not in ("result", "dead"):
                    pass
        except (TimeoutError, OSError, ConnectionError, ProviderError):
            await self.stop()
        finally:
            self._run = None
