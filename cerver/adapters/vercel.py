"""``vercel``: Vercel Sandbox through its official Python SDK (``vercel-sandbox``, extra
``vercel``), pointed at ``CERVER_VERCEL_API_URL``.

A record is the sandbox's *name* (Vercel's durable handle); every call fetches the
sandbox by name inside one SDK session scope (base URL + this account's token), so the
adapter holds no connection state and a restarted session host reconnects from the record.

What is kept across runs: files under ``/vercel/sandbox`` (the workspace) and installed
packages. Each run is a new process (``bash -c``, ``node -e``, ``python3 -c``): Python
variables do not persist between runs on Vercel. ``suspend`` (a hibernating session)
stops the sandbox's session; the SDK resumes it on the next call (persistent sandboxes).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import ssl
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TextIO, cast

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
from cerver.errors import BadRequest, CerverError, NotFound, ProviderError, SandboxLost

if TYPE_CHECKING:
    from vercel.sandbox import Sandbox

EXTRA = "vercel"
ROOT = "/vercel/sandbox"
# Without a project id, sandboxes go to a project of this name in the token's scope.
DEFAULT_PROJECT = "cerver"
STATE_FILE = ".cerver-state.json"
COMMANDS = {
    "shell": ("bash", "-c"),
    "node": ("node", "-e"),
    "python": ("python3", "-c"),
}
INSTALL = {"pip": ("python3", "-m", "pip", "install"), "npm": ("npm", "install")}


# Runs CODE ($1) in the runtime when it parses there, else as shell (``shell_fallback``).
PARSES = {
    "node": 'printf %s "$1" | node --check - >/dev/null 2>&1',
    "python": "python3 -c 'import ast, sys; ast.parse(sys.argv[1])' \"$1\" >/dev/null 2>&1",
}


def _argv(request: ExecRequest) -> list[str]:
    program, flag = COMMANDS[request.language]
    check = PARSES.get(request.language)
    if not request.shell_fallback or check is None:
        return [program, flag, request.code]
    script = f'if {check}; then exec {program} {flag} "$1"; else exec bash -c "$1"; fi'
    return ["bash", "-c", script, "cerver-run", request.code]


@functools.cache
def _tls() -> ssl.SSLContext:
    """One TLS context per process: building one per SDK session (the SDK's default client)
    costs ~100 ms and would be paid on every call (bench/bench_vercel.py)."""
    return ssl.create_default_context()


def _client() -> Any:
    import httpx2  # the SDK's HTTP client, installed with it

    return httpx2.AsyncClient(verify=_tls(), timeout=httpx2.Timeout(60.0))


def _sdk() -> Any:
    return remote.import_sdk("vercel.sandbox", provider="vercel", extra=EXTRA)


class VercelAdapter(ComputeAdapter):
    name = "vercel"

    # ------------------------------------------------------------------ SDK plumbing

    @contextlib.asynccontextmanager
    async def _scope(self, sandbox_id: str | None = None) -> AsyncIterator[Any]:
        """One SDK session (base URL, this account's credentials); vendor errors leave it
        as ``cerver.errors``."""
        sdk = _sdk()
        from vercel.api import session

        token = self.credentials.get("vercel_token", "")
        team = self.credentials.get("vercel_team_id") or None
        project = self.credentials.get("vercel_project_id") or DEFAULT_PROJECT

        async def credentials() -> Any:
            return sdk.SandboxCredentials(token=token, team_id=team, project_id=project)

        options = sdk.SandboxServiceOptions(
            base_url=self.settings.vercel_api_url, credentials_factory=credentials
        )
        with self._translated(sandbox_id):
            async with session(service_options=[options], httpx_client_factory=_client):
                yield sdk

    @contextlib.contextmanager
    def _translated(self, sandbox_id: str | None) -> Iterator[None]:
        sdk = _sdk()
        try:
            yield
        except CerverError:
            raise
        except sdk.SandboxPathNotFoundError as exc:
            raise NotFound(f"no such file in the vercel sandbox: {exc.path}") from None
        except sdk.SandboxApiError as exc:
            raise remote.http_error(
                "vercel",
                exc.status_code,
                str(exc),
                retry_after=exc.response.headers.get("retry-after"),
                sandbox_id=sandbox_id,
            ) from None
        except (OSError, sdk.SandboxError) as exc:
            raise ProviderError(f"vercel did not answer as expected: {exc}") from None

    async def _sandbox(self, sdk: Any, record: SandboxRecord) -> Sandbox:
        sandbox: Sandbox = await sdk.get_sandbox(name=record.sandbox_id)
        return sandbox

    async def verify_credentials(self) -> None:
        """One cheap authenticated call: list at most one sandbox."""
        async with self._scope() as sdk:
            async for _ in sdk.query_sandboxes(page_size=1):
                break

    # ------------------------------------------------------------------ lifecycle

    async def create_sandbox(self, spec: SandboxSpec) -> SandboxRecord:
        remote.check_env(spec.env)
        if spec.options:
            remote.refuse_options("vercel", spec.options)
        timeout = spec.timeout_s or self.settings.sandbox_idle_s
        async with self._scope() as sdk:
            sandbox = await sdk.create_sandbox(
                env=spec.env or None,
                execution_time_limit=timedelta(seconds=timeout),
                persistent=True,
            )
        return SandboxRecord(
            provider=self.name,
            sandbox_id=sandbox.name,
            runtime=spec.runtime,
            isolation="remote",
            data={"root": ROOT, "project_id": sandbox.project_id},
        )

    async def delete_sandbox(self, record: SandboxRecord) -> None:
        try:
            async with self._scope(record.sandbox_id) as sdk:
                sandbox = await self._sandbox(sdk, record)
                await sandbox.destroy()
        except SandboxLost:
            return  # already gone: deleting twice is not an error

    async def suspend(self, record: SandboxRecord) -> None:
        """Stop the sandbox's session; the next call resumes it (files are kept)."""
        with contextlib.suppress(SandboxLost):
            async with self._scope(record.sandbox_id) as sdk:
                await (await self._sandbox(sdk, record)).stop()

    async def get_state(self, record: SandboxRecord) -> SandboxState:
        user_state: dict[str, Any] = {}
        try:
            async with self._scope(record.sandbox_id) as sdk:
                sandbox = await self._sandbox(sdk, record)
                status = str(sandbox.status or "running")
            user_state = await self._user_state(record)
        except SandboxLost:
            status = "lost"
        # A stopped session of a persistent sandbox resumes on the next call.
        shown = "running" if status in ("stopped", "stopping", "snapshotting") else status
        return SandboxState(
            status=shown,
            provider=self.name,
            sandbox_id=record.sandbox_id,
            user_state=user_state,
            details={"vercel_status": status},
        )

    async def _user_state(self, record: SandboxRecord) -> dict[str, Any]:
        try:
            raw = await self.read_file(record, STATE_FILE)
        except NotFound:
            return {}
        found = json.loads(raw)
        return found if isinstance(found, dict) else {}

    async def set_state(self, record: SandboxRecord, state: dict[str, Any]) -> SandboxState:
        """User state lives in the sandbox (``STATE_FILE``), so it lasts as long as it does."""
        if not isinstance(state, dict):
            raise BadRequest("state must be a JSON object", details={"field": "state"})
        await self.write_file(record, STATE_FILE, json.dumps(state).encode())
        return await self.get_state(record)

    async def is_alive(self, record: SandboxRecord) -> bool:
        return (await self.get_state(record)).status not in ("lost", "failed", "aborted")

    # ------------------------------------------------------------------ runs

    async def run(self, record: SandboxRecord, request: ExecRequest) -> ExecResult:
        return await remote.collect(self.run_stream(record, request))

    async def run_stream(
        self, record: SandboxRecord, request: ExecRequest
    ) -> AsyncGenerator[ExecEvent, None]:
        remote.check_env(request.env)
        cwd = remote.remote_dir(ROOT, request.cwd)
        events = self._command(record, _argv(request), cwd, request)
        async with contextlib.aclosing(events):
            async for event in events:
                yield event

    async def _command(
        self, record: SandboxRecord, argv: list[str], cwd: str, request: ExecRequest
    ) -> AsyncGenerator[ExecEvent, None]:
        """Run one process; its output arrives as the SDK routes it (one NDJSON response),
        so events stream in order. A run past its timeout is killed and says so."""
        queue: asyncio.Queue[ExecEvent | BaseException | None] = asyncio.Queue()
        started = time.perf_counter()
        handles: list[Any] = []

        async def execute() -> None:
            try:
                async with self._scope(record.sandbox_id) as sdk:
                    sandbox = await self._sandbox(sdk, record)
                    done = await sandbox.run_process(
                        argv[0],
                        argv[1:],
                        cwd=cwd,
                        env=request.env or None,
                        kill_after=request.timeout_s + 5,
                        stdout=cast(TextIO, remote.QueueWriter(queue, "stdout")),
                        stderr=cast(TextIO, remote.QueueWriter(queue, "stderr")),
                        on_start=handles.append,
                    )
                await queue.put(remote.exit_event(done.returncode, started))
            except BaseException as exc:  # handed to the consumer, which re-raises
                await queue.put(exc)
            finally:
                await queue.put(None)

        task = asyncio.create_task(execute())
        stream = remote.drain(
            queue,
            started,
            timeout_s=request.timeout_s,
            python=request.language == "python",
            limit=self.settings.output_limit_bytes,
        )
        try:
            async with contextlib.aclosing(stream):
                async for event in stream:
                    yield event
        finally:
            if not task.done():
                task.cancel()
                await self._kill(handles)
            with contextlib.suppress(BaseException):
                await task

    async def _kill(self, handles: list[Any]) -> None:
        for process in handles:
            with contextlib.suppress(Exception):
                await process.kill()

    async def install_package(
        self, record: SandboxRecord, request: InstallRequest
    ) -> InstallResult:
        spec = packages.validate(request.manager, request.package)
        argv = [*INSTALL[request.manager], spec]
        exec_request = ExecRequest(code="", timeout_s=request.timeout_s)
        started = time.perf_counter()
        result = await remote.collect(self._command(record, argv, ROOT, exec_request))
        return InstallResult(
            success=result.exit_code == 0 and not result.timed_out,
            output=(result.stdout + result.stderr)[-4000:],
            duration_ms=(time.perf_counter() - started) * 1000.0,
        )

    # ------------------------------------------------------------------ files

    async def write_file(self, record: SandboxRecord, path: str, data: bytes) -> None:
        target = remote.remote_file(ROOT, path)
        async with self._scope(record.sandbox_id) as sdk:
            sandbox = await self._sandbox(sdk, record)
            await sandbox.fs.write_bytes(target, bytes(data))

    async def read_file(self, record: SandboxRecord, path: str) -> bytes:
        target = remote.remote_file(ROOT, path)
        async with self._scope(record.sandbox_id) as sdk:
            sandbox = await self._sandbox(sdk, record)
            data: bytes = await sandbox.fs.read_bytes(target)
        return data


register(VercelAdapter)
