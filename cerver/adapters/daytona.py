"""``daytona``: Daytona sandboxes through the official async SDK (``daytona``, extra
``daytona``), pointed at ``CERVER_DAYTONA_API_URL``.

Where each operation goes (the SDK speaks the wire protocol; see tests/fakes/daytona.py):

    create        POST /sandbox (env, labels, network, auto-stop after the idle setting)
    run python    the sandbox's code interpreter (WebSocket, default context): variables,
                  imports and functions persist between runs while the sandbox runs
    run shell/node a session of its own per run: POST .../process/session, exec (async),
                  its logs over a WebSocket (stdout and stderr apart), the exit code; then
                  the session is deleted (in the background once its command exited;
                  before returning when the run was cut short: that kills it)
    install       pip / npm as a command; kept on the sandbox's disk
    files         bulk upload / download under /home/daytona (the workspace)
    state         a JSON file in the workspace (``STATE_FILE``)
    suspend       POST /sandbox/{id}/stop: disk kept, processes (and Python variables) end;
                  the next operation starts it again (POST /sandbox/{id}/start)
    delete        DELETE /sandbox/{id}; already gone is not an error

The record is the sandbox id; every operation looks the sandbox up (one GET), so a
restarted session host reconnects from the record, and a sandbox that Daytona stopped
(its auto-stop) is started again first. One SDK client per adapter instance and event
loop, closed with the adapter. Toolbox calls go to the ``toolboxProxyUrl`` the control
plane returns for the sandbox, with the same key.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import json
import math
import posixpath
import secrets
import shlex
import time
from collections.abc import AsyncGenerator, Iterator
from typing import Any

from cerver.adapters import remote
from cerver.adapters.base import (
    ComputeAdapter,
    ExecEvent,
    ExecRequest,
    ExecResult,
    InstallRequest,
    InstallResult,
    SandboxRecord,
    SandboxSpec,
    SandboxState,
)
from cerver.adapters.local import packages
from cerver.adapters.registry import register
from cerver.config import Settings
from cerver.errors import (
    BadRequest,
    CerverError,
    ComputeUnavailable,
    NotFound,
    ProviderError,
    SandboxLost,
)

EXTRA = "daytona"
ROOT = "/home/daytona"  # the default snapshot's user home and working directory
STATE_FILE = ".cerver-state.json"
LABEL = "cerver_account"
PROVISION_TIMEOUT_S = 120.0  # create / start: waiting for the sandbox to be started
PYTHON_GRACE_S = 10.0  # the interpreter enforces a run's timeout; ours is the backstop
# Daytona states: which ones the next operation starts again, which mean it is gone.
RESTARTABLE = ("stopped", "stopping", "archived", "archiving")
GONE = ("destroyed", "destroying")
FAILED = ("error", "build_failed")
INSTALL = {"pip": "python3 -m pip install", "npm": "npm install"}
# Node code that does not parse runs as shell when the language was only defaulted.
NODE_OR_SHELL = (
    'if printf %s "$1" | node --check - >/dev/null 2>&1; then exec node -e "$1"; '
    'else exec bash -c "$1"; fi'
)


def _sdk() -> Any:
    return remote.import_sdk("daytona", provider="daytona", extra=EXTRA)


def _parses_as_python(code: str) -> bool:
    try:
        ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return True


def _shell_line(request: ExecRequest) -> str:
    """One command line for the session's shell (which starts in the workspace): cd to
    the run's directory, the run's env, the program."""
    cwd = posixpath.relpath(remote.remote_dir(ROOT, request.cwd), ROOT)
    code = shlex.quote(request.code)
    program = f"bash -c {code}"  # shell, and python code that did not parse (fallback)
    if request.language == "node" and request.shell_fallback:
        program = f"bash -c {shlex.quote(NODE_OR_SHELL)} cerver-run {code}"
    elif request.language == "node":
        program = f"node -e {code}"
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in request.env.items())
    line = f"{env} {program}" if env else program
    return line if cwd == "." else f"cd {shlex.quote(cwd)} && {line}"


class DaytonaAdapter(ComputeAdapter):
    name = "daytona"

    def __init__(self, settings: Settings, credentials: dict[str, str] | None = None) -> None:
        super().__init__(settings, credentials)
        self._client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._cleanups: set[asyncio.Task[None]] = set()  # sessions being deleted

    def __repr__(self) -> str:  # never the key
        return f"DaytonaAdapter(api_url={self.settings.daytona_api_url!r})"

    # ------------------------------------------------------------------ SDK plumbing

    def _daytona(self) -> Any:
        """This instance's SDK client for the running loop (its HTTP session is bound to it)."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            key = self.credentials.get("daytona_api_key")
            if not key:
                raise ComputeUnavailable(
                    "no Daytona credentials for this account; register them with POST "
                    '/v2/account/providers {"provider": "daytona", "credentials": '
                    '{"daytona_api_key": ...}}',
                    details={"provider": "daytona", "missing": ["daytona_api_key"]},
                )
            sdk = _sdk()
            config = sdk.DaytonaConfig(
                api_key=key,
                api_url=self.settings.daytona_api_url,
                target=self.credentials.get("daytona_target") or None,
            )
            self._client, self._loop = sdk.AsyncDaytona(config), loop
        return self._client

    @contextlib.contextmanager
    def _translated(self, sandbox_id: str | None = None) -> Iterator[None]:
        """Vendor errors become ``cerver.errors`` here, and only here."""
        sdk = _sdk()
        try:
            yield
        except CerverError:
            raise
        except sdk.DaytonaError as exc:
            message = self._scrub(exc.message)
            if isinstance(exc, sdk.DaytonaNotFoundError) and exc.code == "FILE_NOT_FOUND":
                raise NotFound(f"no such file in the daytona sandbox: {message}") from None
            if exc.status_code is None:
                raise ProviderError(
                    f"daytona did not answer as expected: {message}",
                    details={"provider": "daytona"},
                ) from None
            raise remote.http_error(
                "daytona",
                exc.status_code,
                message,
                retry_after=(exc.headers or {}).get("Retry-After")
                or (exc.headers or {}).get("retry-after"),
                sandbox_id=sandbox_id,
            ) from None
        except (OSError, ValueError) as exc:
            raise ProviderError(
                f"daytona did not answer as expected: {self._scrub(str(exc))}",
                details={"provider": "daytona"},
            ) from None

    def _scrub(self, text: str) -> str:
        key = self.credentials.get("daytona_api_key")
        return text.replace(key, "***") if key else text

    async def _sandbox(self, record: SandboxRecord, *, start: bool = True) -> Any:
        """The SDK's sandbox, looked up by id; a stopped one is started (``start``)."""
        if record.provider != self.name:
            raise BadRequest(f"record of provider {record.provider!r} given to the daytona adapter")
        with self._translated(record.sandbox_id):
            sandbox = await self._daytona().get(record.sandbox_id)
            state = str(getattr(sandbox.state, "value", sandbox.state))
            if state in GONE:
                raise SandboxLost(
                    f"daytona sandbox {record.sandbox_id} is {state}",
                    details={"provider": "daytona", "sandbox_id": record.sandbox_id},
                )
            if start and state in RESTARTABLE:
                await sandbox.start(timeout=PROVISION_TIMEOUT_S)
        return sandbox

    async def verify_credentials(self) -> None:
        """One cheap authenticated call, at registration: list at most one sandbox."""
        sdk = _sdk()
        with self._translated():
            async for _ in self._daytona().list(sdk.ListSandboxesQuery(limit=1)):
                break

    # ------------------------------------------------------------------ lifecycle

    async def create_sandbox(self, spec: SandboxSpec) -> SandboxRecord:
        remote.check_env(spec.env)
        if spec.options:
            remote.refuse_options("daytona", spec.options)
        sdk = _sdk()
        idle_s = spec.timeout_s or self.settings.sandbox_idle_s
        params = sdk.CreateSandboxFromSnapshotParams(
            language="python",
            env_vars=dict(spec.env),
            labels={LABEL: spec.account_id},
            network_block_all=not spec.network,
            auto_stop_interval=max(1, math.ceil(idle_s / 60)),
        )
        with self._translated():
            sandbox = await self._daytona().create(params, timeout=PROVISION_TIMEOUT_S)
        return SandboxRecord(
            provider=self.name,
            sandbox_id=sandbox.id,
            runtime=spec.runtime,
            isolation="remote",
            data={"root": ROOT, "target": sandbox.target},
        )

    async def delete_sandbox(self, record: SandboxRecord) -> None:
        try:
            sandbox = await self._sandbox(record, start=False)
            with self._translated(record.sandbox_id):
                await sandbox.delete()
        except SandboxLost:
            return  # already gone: deleting twice is not an error

    async def suspend(self, record: SandboxRecord) -> None:
        """Stop the sandbox (disk kept, processes end); the next operation starts it."""
        with contextlib.suppress(SandboxLost):
            sandbox = await self._sandbox(record, start=False)
            with self._translated(record.sandbox_id):
                await sandbox.stop(timeout=PROVISION_TIMEOUT_S)

    async def get_state(self, record: SandboxRecord) -> SandboxState:
        """Daytona's view; a stopped sandbox shows ``running`` (the next call starts it) and
        is not started to answer this."""
        try:
            sandbox = await self._sandbox(record, start=False)
        except SandboxLost:
            return SandboxState(status="lost", provider=self.name, sandbox_id=record.sandbox_id)
        state = str(getattr(sandbox.state, "value", sandbox.state))
        user_state: dict[str, Any] = {}
        if state == "started":
            user_state = await self._user_state(record)
        status = "failed" if state in FAILED else "running"
        return SandboxState(
            status=status,
            provider=self.name,
            sandbox_id=record.sandbox_id,
            user_state=user_state,
            details={
                "daytona_state": state,
                "target": sandbox.target,
                "cpu": sandbox.cpu,
                "memory_gib": sandbox.memory,
                "auto_stop_minutes": sandbox.auto_stop_interval,
            },
        )

    async def _user_state(self, record: SandboxRecord) -> dict[str, Any]:
        try:
            found = json.loads(await self.read_file(record, STATE_FILE))
        except NotFound:
            return {}
        return found if isinstance(found, dict) else {}

    async def set_state(self, record: SandboxRecord, state: dict[str, Any]) -> SandboxState:
        """User state lives in the sandbox (``STATE_FILE``), so it lasts as long as it does."""
        if not isinstance(state, dict):
            raise BadRequest("state must be a JSON object", details={"field": "state"})
        await self.write_file(record, STATE_FILE, json.dumps(state).encode())
        return await self.get_state(record)

    async def is_alive(self, record: SandboxRecord) -> bool:
        return (await self.get_state(record)).status == "running"

    async def close(self) -> None:
        if self._cleanups and self._loop is asyncio.get_running_loop():
            await asyncio.gather(*self._cleanups, return_exceptions=True)
        self._cleanups.clear()
        client, self._client = self._client, None
        if client is not None and self._loop is asyncio.get_running_loop():
            with contextlib.suppress(Exception):
                await client.close()

    # ------------------------------------------------------------------ runs

    async def run(self, record: SandboxRecord, request: ExecRequest) -> ExecResult:
        return await remote.collect(self.run_stream(record, request))

    async def run_stream(
        self, record: SandboxRecord, request: ExecRequest
    ) -> AsyncGenerator[ExecEvent, None]:
        """Output as Daytona streams it; the last event is ``exit``. Past its timeout, or
        closed early, a command's session is deleted (which kills it)."""
        remote.check_env(request.env)
        if "\x00" in request.code:
            raise BadRequest("code must not contain NUL bytes", details={"field": "code"})
        line = _shell_line(request)
        python = request.language == "python"
        if python and request.shell_fallback and not _parses_as_python(request.code):
            python = False
        queue: asyncio.Queue[ExecEvent | BaseException | None] = asyncio.Queue()
        started = time.perf_counter()
        sandbox = await self._sandbox(record)
        cleanup: list[str] = []  # the session to delete, once it exists
        work = (
            self._python(sandbox, record, request, queue)
            if python
            else self._command(sandbox, record, line, queue, cleanup)
        )

        async def produce() -> None:
            try:
                await work
            except BaseException as exc:  # handed to the consumer, which re-raises
                await queue.put(exc)
            finally:
                await queue.put(None)

        task = asyncio.create_task(produce())
        stream = remote.drain(
            queue,
            started,
            timeout_s=request.timeout_s + (PYTHON_GRACE_S if python else 0.0),
            python=request.language == "python",
            limit=self.settings.output_limit_bytes,
        )
        try:
            async with contextlib.aclosing(stream):
                async for event in stream:
                    yield event
        finally:
            finished = task.done()
            if not finished:
                task.cancel()
            with contextlib.suppress(BaseException):
                await task
            for session_id in cleanup:
                ending = self._end_session(sandbox, session_id)
                if finished:  # its command has exited: the session goes in the background
                    self._cleanups.add(asyncio.create_task(ending))
                    self._cleanups = {t for t in self._cleanups if not t.done()}
                else:  # cut short (timeout, closed early): deleting it kills the run
                    await ending

    async def _end_session(self, sandbox: Any, session_id: str) -> None:
        with contextlib.suppress(Exception):
            await sandbox.process.delete_session(session_id)

    async def _command(
        self,
        sandbox: Any,
        record: SandboxRecord,
        line: str,
        queue: asyncio.Queue[Any],
        cleanup: list[str],
    ) -> None:
        sdk = _sdk()
        session_id = f"cerver-{secrets.token_hex(8)}"
        started = time.perf_counter()
        with self._translated(record.sandbox_id):
            await sandbox.process.create_session(session_id)
            cleanup.append(session_id)
            command = await sandbox.process.execute_session_command(
                session_id, sdk.SessionExecuteRequest(command=line, run_async=True)
            )
            await sandbox.process.get_session_command_logs_async(
                session_id,
                command.cmd_id,
                lambda text: queue.put_nowait(ExecEvent(type="stdout", data=text)),
                lambda text: queue.put_nowait(ExecEvent(type="stderr", data=text)),
            )
            done = await sandbox.process.get_session_command(session_id, command.cmd_id)
        exit_code = done.exit_code if done.exit_code is not None else 1
        await queue.put(remote.exit_event(exit_code, started))

    async def _python(
        self, sandbox: Any, record: SandboxRecord, request: ExecRequest, queue: asyncio.Queue[Any]
    ) -> None:
        sdk = _sdk()
        started = time.perf_counter()
        stderr: list[str] = []

        def on_stderr(message: Any) -> None:
            stderr.append(message.output)
            queue.put_nowait(ExecEvent(type="stderr", data=message.output))

        with self._translated(record.sandbox_id):
            try:
                execution = await sandbox.code_interpreter.run_code(
                    request.code,
                    envs=dict(request.env) or None,
                    timeout=max(1, math.ceil(request.timeout_s)),
                    on_stdout=lambda m: queue.put_nowait(ExecEvent(type="stdout", data=m.output)),
                    on_stderr=on_stderr,
                )
            except sdk.DaytonaTimeoutError as exc:
                if isinstance(exc, sdk.DaytonaConnectionError):
                    raise
                note = f"timed out after {request.timeout_s:g}s\n"
                await queue.put(ExecEvent(type="stderr", data=note))
                timed_out = ExecResult(exit_code=remote.TIMED_OUT_EXIT, timed_out=True)
                timed_out.error = note.strip()
                await queue.put(ExecEvent(type="exit", result=timed_out))
                return
        exit_code = 0
        if execution.error is not None:
            exit_code = 1
            trace = execution.error.traceback or f"{execution.error.name}: {execution.error.value}"
            trace = trace if trace.endswith("\n") else trace + "\n"
            if trace.strip() not in "".join(stderr):
                await queue.put(ExecEvent(type="stderr", data=trace))
        await queue.put(remote.exit_event(exit_code, started))

    async def install_package(
        self, record: SandboxRecord, request: InstallRequest
    ) -> InstallResult:
        spec = packages.validate(request.manager, request.package)
        command = f"{INSTALL[request.manager]} {shlex.quote(spec)}"
        result = await self.run(
            record, ExecRequest(code=command, language="shell", timeout_s=request.timeout_s)
        )
        return InstallResult(
            success=result.exit_code == 0 and not result.timed_out,
            output=(result.stdout + result.stderr)[-4000:],
            duration_ms=result.duration_ms,
        )

    # ------------------------------------------------------------------ files

    async def write_file(self, record: SandboxRecord, path: str, data: bytes) -> None:
        target = remote.remote_file(ROOT, path)
        sandbox = await self._sandbox(record)
        with self._translated(record.sandbox_id):
            await sandbox.fs.upload_file(bytes(data), target)

    async def read_file(self, record: SandboxRecord, path: str) -> bytes:
        target = remote.remote_file(ROOT, path)
        sandbox = await self._sandbox(record)
        with self._translated(record.sandbox_id):
            data = await sandbox.fs.download_file(target)
        return bytes(data or b"")


register(DaytonaAdapter)
