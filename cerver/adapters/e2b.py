"""``E2BAdapter``: sandboxes on the account's own E2B (Firecracker microVMs), through the
official SDK's async API (``e2b-code-interpreter``, optional extra ``e2b``).

Where each operation goes (the SDK speaks the wire protocol, see ``PROVIDERS.md``):

    create        POST /v2/sandboxes (template, timeout, envs, on timeout: pause), then
                  POST /contexts on the code interpreter: the record keeps the context id
    run python    POST /execute {code, context_id} (NDJSON): variables, imports and
                  functions survive between runs, like one notebook
    run shell/node Process.Start (Connect server stream), /bin/bash -l -c; nothing but
                  files and the sandbox env survives between commands
    install       pip / npm through Process.Start; kept on the sandbox's disk
    files         GET/POST /files under /home/user (the workspace)
    state         a JSON file in the sandbox (.cerver/state.json)
    suspend       POST /sandboxes/{id}/pause: memory and disk are snapshotted, so Python
                  state survives; the next operation connects, which resumes it
    delete        DELETE /sandboxes/{id}; a 404 (already gone) is not an error

Errors are translated here with ``raise ... from``: a refused key is 502
``provider_auth_failed`` carrying E2B's message (never the key), a rate limit is 429 with
``Retry-After`` (the SDK has already retried per E2B's ``Retry-After``; it does not hand
the header on, so we answer ``RETRY_AFTER_S``), a sandbox E2B no longer has is
``SandboxLost``, which makes the session layer provision a replacement.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import posixpath
import secrets
import shlex
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

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
    PathEscape,
    PayloadTooLarge,
    ProviderAuthFailed,
    ProviderError,
    RateLimited,
    SandboxLost,
)

T = TypeVar("T")
HOME = "/home/user"
STATE_FILE = ".cerver/state.json"
SPEC_OPTIONS = ("template",)
RETRY_AFTER_S = 5.0
MAX_INLINE_CODE = 64 * 1024  # beyond this a command goes through a file (argv limit)
SDK_GRACE_S = 10.0  # our own deadline fires first; the SDK's is a backstop
TIMEOUT_EXIT_CODE = 124


def _sdk() -> Any:
    """The official SDK, imported on first use (the extra ``e2b`` is optional)."""
    return remote.import_sdk("e2b_code_interpreter", provider="e2b", extra="e2b")


def _remote_path(path: str, *, field: str = "path") -> str:
    """A workspace-relative path as E2B's absolute path under /home/user."""
    if not isinstance(path, str) or not path or "\x00" in path:
        raise BadRequest(f"{field} must be a non-empty relative path", details={"field": field})
    if path.startswith("/"):
        raise PathEscape(
            f"{field} {path!r} must be relative to the workspace", details={field: path}
        )
    norm = posixpath.normpath(path)
    if norm == ".." or norm.startswith("../"):
        raise PathEscape(f"{field} {path!r} leaves the workspace", details={field: path})
    return HOME if norm == "." else f"{HOME}/{norm}"


class _Paused(ProviderError):
    """E2B paused the sandbox under us (its timeout); connecting again resumes it."""


def _timeout_note(timeout_s: float) -> str:
    return f"execution timed out after {timeout_s:g}s"


class E2BAdapter(ComputeAdapter):
    name = "e2b"

    def __init__(self, settings: Settings, credentials: dict[str, str] | None = None) -> None:
        super().__init__(settings, credentials)
        self._connected: dict[str, Any] = {}  # sandbox id -> the SDK's AsyncSandbox

    def __repr__(self) -> str:  # never the key
        return f"E2BAdapter(api_url={self.settings.e2b_api_url!r})"

    # ------------------------------------------------------------------ SDK plumbing

    def _key(self) -> str:
        key = self.credentials.get("e2b_api_key")
        if not key:
            raise ComputeUnavailable(
                "no E2B credentials for this account; register them with POST "
                '/v2/account/providers {"provider": "e2b", "credentials": {"e2b_api_key": ...}}',
                details={"provider": "e2b", "missing": ["e2b_api_key"]},
            )
        return key

    def _opts(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"api_key": self._key(), "api_url": self.settings.e2b_api_url}
        if self.settings.e2b_sandbox_url:
            opts["sandbox_url"] = self.settings.e2b_sandbox_url
        return opts

    @contextlib.contextmanager
    def _translated(self, sandbox_id: str | None = None) -> Iterator[None]:
        """Vendor errors become ``cerver.errors`` here, and only here."""
        import e2b

        try:
            yield
        except CerverError:
            raise
        except e2b.AuthenticationException as exc:
            raise ProviderAuthFailed(
                f"E2B refused the account's API key: {self._scrub(exc)}",
                details={"provider": "e2b"},
            ) from exc
        except e2b.RateLimitException as exc:
            raise RateLimited(
                f"E2B rate limit: {self._scrub(exc)}",
                retry_after_s=RETRY_AFTER_S,
                details={"provider": "e2b"},
            ) from exc
        except e2b.FileNotFoundException as exc:
            raise NotFound(self._scrub(exc)) from exc
        except (e2b.SandboxNotFoundException, e2b.SandboxNotRunningException) as exc:
            raise self._lost(sandbox_id, exc) from exc
        except e2b.InvalidArgumentException as exc:
            raise BadRequest(f"E2B: {self._scrub(exc)}") from exc
        except Exception as exc:  # SDK, transport, protocol: E2B failed us, the session stays
            raise ProviderError(
                f"E2B request failed: {type(exc).__name__}: {self._scrub(exc)}",
                details={"provider": "e2b"},
            ) from exc

    def _scrub(self, exc: BaseException) -> str:
        text = str(exc)
        key = self.credentials.get("e2b_api_key")
        return text.replace(key, "***") if key else text

    def _lost(self, sandbox_id: str | None, exc: BaseException) -> SandboxLost:
        if sandbox_id:
            self._connected.pop(sandbox_id, None)
        return SandboxLost(
            f"E2B sandbox {sandbox_id} is gone (expired or deleted): {self._scrub(exc)}",
            details={"provider": "e2b", "sandbox_id": sandbox_id},
        )

    async def _sandbox(self, record: SandboxRecord) -> Any:
        """The connected SDK sandbox; connecting resumes a paused one."""
        if record.provider != self.name:
            raise BadRequest(f"record of provider {record.provider!r} given to the e2b adapter")
        sandbox = self._connected.get(record.sandbox_id)
        if sandbox is None:
            sdk = _sdk()
            with self._translated(record.sandbox_id):
                sandbox = await sdk.AsyncSandbox.connect(
                    record.sandbox_id, timeout=self.settings.e2b_timeout_s, **self._opts()
                )
            self._connected[record.sandbox_id] = sandbox
        return sandbox

    async def _recheck(self, record: SandboxRecord, exc: CerverError) -> CerverError:
        """An in-sandbox call failed: ask the control plane what became of the sandbox.
        Gone is ``SandboxLost``; paused (E2B's timeout) is ``_Paused``, which a retry
        resumes; anything else is the original error."""
        sdk = _sdk()
        try:
            info = await sdk.AsyncSandbox.get_info(record.sandbox_id, **self._opts())
        except sdk.SandboxNotFoundException as gone:
            return self._lost(record.sandbox_id, gone)
        except Exception:
            return exc
        if str(getattr(info.state, "value", info.state)) == "paused":
            self._connected.pop(record.sandbox_id, None)
            return _Paused(f"E2B paused sandbox {record.sandbox_id} (its timeout)")
        return exc

    async def _in_sandbox(self, record: SandboxRecord, op: Callable[[Any], Awaitable[T]]) -> T:
        """One call to the sandbox's daemons, resuming it once if E2B had paused it."""
        for attempt in range(2):
            sandbox = await self._sandbox(record)
            try:
                with self._translated(record.sandbox_id):
                    return await op(sandbox)
            except ProviderError as exc:
                err = await self._recheck(record, exc)
                if isinstance(err, _Paused) and attempt == 0:
                    continue
                if err is exc:
                    raise
                raise err from exc
        raise AssertionError("unreachable")

    async def verify_credentials(self) -> None:
        """One cheap authenticated call, at registration: list at most one sandbox. A key
        E2B refuses raises ``ProviderAuthFailed``."""
        sdk = _sdk()
        with self._translated():
            await sdk.AsyncSandbox.list(limit=1, **self._opts()).next_items()

    # ------------------------------------------------------------------ create

    async def create_sandbox(self, spec: SandboxSpec) -> SandboxRecord:
        unknown = set(spec.options) - set(SPEC_OPTIONS)
        if unknown:
            raise BadRequest(
                f"unknown e2b sandbox options {sorted(unknown)}; valid: {list(SPEC_OPTIONS)}",
                details={"field": "options"},
            )
        template = str(spec.options.get("template") or self.settings.e2b_template)
        sdk = _sdk()
        opts = self._opts()
        with self._translated():
            sandbox = await sdk.AsyncSandbox.create(
                template=template,
                timeout=int(spec.timeout_s or self.settings.e2b_timeout_s),
                metadata={"cerver_account": spec.account_id},
                envs=dict(spec.env),
                allow_internet_access=spec.network,
                lifecycle={"on_timeout": "pause"},
                **opts,
            )
        try:
            with self._translated(sandbox.sandbox_id):
                context = await sandbox.create_code_context(cwd=HOME)
        except BaseException:
            with contextlib.suppress(Exception):
                await sandbox.kill()
            raise
        self._connected[sandbox.sandbox_id] = sandbox
        return SandboxRecord(
            provider=self.name,
            sandbox_id=sandbox.sandbox_id,
            runtime=spec.runtime,
            isolation="firecracker",
            data={"template": template, "context_id": context.id},
        )

    # ------------------------------------------------------------------ runs

    def _timeout(self, requested: float) -> float:
        if requested <= 0:
            raise BadRequest("timeout_s must be positive", details={"field": "timeout_s"})
        return min(requested, self.settings.max_run_timeout_s)

    async def run(self, record: SandboxRecord, request: ExecRequest) -> ExecResult:
        result: ExecResult | None = None
        async with contextlib.aclosing(self.run_stream(record, request)) as events:
            async for event in events:
                result = event.result if event.type == "exit" else result
        assert result is not None
        return result

    async def run_stream(
        self, record: SandboxRecord, request: ExecRequest
    ) -> AsyncGenerator[ExecEvent, None]:
        """Output as E2B streams it; the last event is ``exit``. Closing early stops the run
        (the command is killed; a Python cell's context is restarted, losing its variables,
        as E2B cannot interrupt a cell). A sandbox E2B paused
        is resumed and the run retried once, if nothing of it ran yet."""
        timeout_s = self._timeout(request.timeout_s)
        cwd = _remote_path(request.cwd, field="cwd") if request.cwd else None
        started = time.perf_counter()
        for attempt in range(2):
            yielded = False
            sandbox = await self._sandbox(record)
            queue: asyncio.Queue[ExecEvent] = asyncio.Queue()
            if request.language == "python":
                work = self._python(sandbox, record, request, timeout_s, queue.put_nowait)
            else:
                work = self._command(sandbox, record, request, timeout_s, cwd, queue.put_nowait)
            task = asyncio.create_task(work)
            try:
                while True:
                    getter = asyncio.ensure_future(queue.get())
                    await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                    if getter.done():
                        yielded = True
                        yield getter.result()
                        continue
                    getter.cancel()
                    while not queue.empty():
                        yielded = True
                        yield queue.get_nowait()
                    break
                result = await task
            except ProviderError as exc:
                err = await self._recheck(record, exc)
                if isinstance(err, _Paused) and attempt == 0 and not yielded:
                    continue
                if err is exc:
                    raise
                raise err from exc
            finally:
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, CerverError):
                        await task
            result.duration_ms = (time.perf_counter() - started) * 1000
            yield ExecEvent(type="exit", result=result)
            return

    async def _command(
        self, sandbox: Any, record: SandboxRecord, request: ExecRequest, timeout_s: float,
        cwd: str | None, emit: Callable[[ExecEvent], None],
    ) -> ExecResult:  # fmt: skip
        import e2b

        if "\x00" in request.code:
            raise BadRequest("code must not contain NUL bytes", details={"field": "code"})
        command, script = request.code, None
        if request.language == "node":
            command = f"node -e {shlex.quote(request.code)}"
        if len(command.encode()) > MAX_INLINE_CODE:
            ext = "js" if request.language == "node" else "sh"
            script = f"{HOME}/.cerver/run-{secrets.token_hex(6)}.{ext}"
            with self._translated(record.sandbox_id):
                await sandbox.files.write(script, request.code.encode(), use_octet_stream=True)
            # "$HOME" is /home/user at E2B (and the workspace wherever it is mapped)
            relative = shlex.quote(script.removeprefix(HOME + "/"))
            command = f'{"node" if ext == "js" else "bash"} "$HOME"/{relative}'
        out: list[str] = []
        err: list[str] = []

        def on(kind: str, sink: list[str]) -> Callable[[str], None]:
            def push(text: str) -> None:
                sink.append(text)
                emit(ExecEvent(type=kind, data=text))  # type: ignore[arg-type]

            return push

        with self._translated(record.sandbox_id):
            handle = await sandbox.commands.run(
                command, background=True, envs=dict(request.env) or None, cwd=cwd,
                on_stdout=on("stdout", out), on_stderr=on("stderr", err),
                timeout=timeout_s + SDK_GRACE_S,
            )  # fmt: skip
        exit_code, timed_out = 0, False
        try:
            async with asyncio.timeout(timeout_s):
                await handle.wait()
        except TimeoutError:
            timed_out, exit_code = True, TIMEOUT_EXIT_CODE
            with contextlib.suppress(Exception):
                await handle.kill()
        except e2b.CommandExitException as exc:
            exit_code = exc.exit_code
        except asyncio.CancelledError:  # the stream was closed early: E2B would keep it running
            with contextlib.suppress(Exception):
                await handle.kill()
            raise
        except Exception:
            with self._translated(record.sandbox_id):
                raise
        finally:
            await handle.disconnect()  # stops the SDK's reader task (a no-op once done)
            if script is not None:
                with contextlib.suppress(Exception):
                    await sandbox.files.remove(script)
        result = ExecResult(stdout="".join(out), stderr="".join(err), exit_code=exit_code)
        if timed_out:
            note = _timeout_note(timeout_s)
            result.timed_out, result.error = True, note
            result.stderr += f"\n[cerver: {note}]\n"
            emit(ExecEvent(type="stderr", data=f"\n[cerver: {note}]\n"))
        return result

    async def _python(
        self, sandbox: Any, record: SandboxRecord, request: ExecRequest, timeout_s: float,
        emit: Callable[[ExecEvent], None],
    ) -> ExecResult:  # fmt: skip
        sdk = _sdk()
        context_id = str(record.data.get("context_id", ""))
        context = sdk.Context(context_id=context_id, language="python", cwd=HOME)
        out: list[str] = []
        err: list[str] = []

        def on(kind: str, sink: list[str]) -> Callable[[Any], None]:
            def push(message: Any) -> None:
                sink.append(message.line)
                emit(ExecEvent(type=kind, data=message.line))  # type: ignore[arg-type]

            return push

        try:
            async with asyncio.timeout(timeout_s):
                with self._translated(record.sandbox_id):
                    execution = await sandbox.run_code(
                        request.code, context=context, envs=dict(request.env) or None,
                        on_stdout=on("stdout", out), on_stderr=on("stderr", err),
                        timeout=timeout_s + SDK_GRACE_S,
                    )  # fmt: skip
        except asyncio.CancelledError:  # closed early: stop the cell the only way E2B can
            with contextlib.suppress(Exception):
                await sandbox.restart_code_context(context)
            raise
        except TimeoutError:
            # E2B cannot interrupt a cell; restarting its context stops it (state is lost).
            with contextlib.suppress(Exception):
                await sandbox.restart_code_context(context)
            note = f"{_timeout_note(timeout_s)} (the Python context was restarted: state lost)"
            emit(ExecEvent(type="stderr", data=f"\n[cerver: {note}]\n"))
            return ExecResult(
                stdout="".join(out), stderr="".join(err) + f"\n[cerver: {note}]\n",
                exit_code=TIMEOUT_EXIT_CODE, timed_out=True, error=note,
                interpreter_restarted=True,
            )  # fmt: skip
        result = ExecResult(stdout="".join(out), stderr="".join(err))
        if execution.error is not None:
            tb = execution.error.traceback or f"{execution.error.name}: {execution.error.value}"
            tb = tb if tb.endswith("\n") else tb + "\n"
            result.exit_code, result.error = 1, tb
            result.stderr += tb
            emit(ExecEvent(type="stderr", data=tb))
        return result

    # ------------------------------------------------------------------ packages

    async def install_package(
        self, record: SandboxRecord, request: InstallRequest
    ) -> InstallResult:
        spec = packages.validate(request.manager, request.package)
        command = (
            f"python3 -m pip install {shlex.quote(spec)}"
            if request.manager == "pip"
            else f"npm install {shlex.quote(spec)}"
        )
        result = await self.run(
            record, ExecRequest(code=command, language="shell", timeout_s=request.timeout_s)
        )
        return InstallResult(
            success=result.exit_code == 0 and not result.timed_out,
            output=result.stdout + result.stderr,
            duration_ms=result.duration_ms,
        )

    # ------------------------------------------------------------------ files

    async def write_file(self, record: SandboxRecord, path: str, data: bytes) -> None:
        remote = _remote_path(path)
        if len(data) > self.settings.max_file_bytes:
            raise PayloadTooLarge(
                f"file is {len(data)} bytes; the limit is {self.settings.max_file_bytes}",
                details={"limit": self.settings.max_file_bytes},
            )
        payload = bytes(data)
        await self._in_sandbox(
            record, lambda sb: sb.files.write(remote, payload, use_octet_stream=True)
        )

    async def read_file(self, record: SandboxRecord, path: str) -> bytes:
        remote = _remote_path(path)
        data = await self._in_sandbox(record, lambda sb: sb.files.read(remote, format="bytes"))
        if len(data) > self.settings.max_file_bytes:
            raise PayloadTooLarge(
                f"{path!r} is {len(data)} bytes; the limit is {self.settings.max_file_bytes}",
                details={"path": path, "limit": self.settings.max_file_bytes},
            )
        return bytes(data)

    # ------------------------------------------------------------------ state

    async def get_state(self, record: SandboxRecord) -> SandboxState:
        """E2B's own view of the sandbox (a paused one is not resumed to answer this)."""
        sdk = _sdk()
        try:
            with self._translated(record.sandbox_id):
                info = await sdk.AsyncSandbox.get_info(record.sandbox_id, **self._opts())
        except SandboxLost:
            return SandboxState(status="lost", provider=self.name, sandbox_id=record.sandbox_id)
        status = str(getattr(info.state, "value", info.state))
        user_state: dict[str, Any] = {}
        if status == "running":
            with contextlib.suppress(NotFound):
                user_state = json.loads(await self.read_file(record, STATE_FILE))
        return SandboxState(
            status=status,
            provider=self.name,
            sandbox_id=record.sandbox_id,
            user_state=user_state,
            details={
                "template": info.template_id,
                "started_at": info.started_at.isoformat(),
                "end_at": info.end_at.isoformat(),
                "cpu_count": info.cpu_count,
                "memory_mb": info.memory_mb,
                "python_context": record.data.get("context_id"),
            },
        )

    async def set_state(self, record: SandboxRecord, state: dict[str, Any]) -> SandboxState:
        if not isinstance(state, dict):
            raise BadRequest("state must be a JSON object", details={"field": "state"})
        await self.write_file(record, STATE_FILE, json.dumps(state).encode())
        return await self.get_state(record)

    async def is_alive(self, record: SandboxRecord) -> bool:
        return (await self.get_state(record)).status in ("running", "paused")

    # ------------------------------------------------------------------ lifecycle

    async def suspend(self, record: SandboxRecord) -> None:
        """Pause at E2B (memory and disk kept); the next operation resumes it."""
        sandbox = await self._sandbox(record)
        with self._translated(record.sandbox_id):
            await sandbox.pause()
        self._connected.pop(record.sandbox_id, None)

    async def delete_sandbox(self, record: SandboxRecord) -> None:
        sdk = _sdk()
        self._connected.pop(record.sandbox_id, None)
        with self._translated(record.sandbox_id):
            await sdk.AsyncSandbox.kill(record.sandbox_id, **self._opts())

    async def close(self) -> None:
        self._connected.clear()


register(E2BAdapter)
