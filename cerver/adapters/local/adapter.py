"""``LocalAdapter``: sandboxes as confined processes on this node (the embedded default).

The adapter only orchestrates; confinement is ``isolation``, process handling
``process``, the persistent interpreter ``pyrepl``, file access ``files``, the on-disk
layout and record data ``layout``, package specs ``packages``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections.abc import AsyncGenerator
from typing import Any

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
from cerver.adapters.local import files, layout, packages, runtimes
from cerver.adapters.local.isolation import (
    Launch,
    build_launch,
    bwrap_unavailable_reason,
    limits_from,
    running_as_root,
)
from cerver.adapters.local.layout import Isolation, LocalSandboxData
from cerver.adapters.local.process import (
    collect,
    kill_group,
    kill_uid,
    reap_orphans,
    schedule_reap,
    stream_process,
)
from cerver.adapters.local.pyrepl import PythonInterpreter
from cerver.errors import BadRequest, ProviderError, SandboxLost

SPEC_OPTIONS = {"isolation": ("auto", "bwrap", "rlimits")}
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_INLINE_CODE = 100 * 1024  # beyond this, code goes through a file (argv strings max 128 KiB)
UID_ATTEMPTS = 8


def _check_env(env: dict[str, str], field: str) -> None:
    for key, value in env.items():
        if not ENV_NAME.match(key) or "\x00" in value:
            raise BadRequest(
                f"{field}: invalid environment variable {key!r}", details={"field": field}
            )


class LocalAdapter(ComputeAdapter):
    name = "local"

    def __init__(self, settings: Any, credentials: dict[str, str] | None = None) -> None:
        super().__init__(settings, credentials)
        self._pythons: dict[str, PythonInterpreter] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._running: dict[str, set[int]] = {}  # sandbox id -> pgids of runs in progress

    # ------------------------------------------------------------------ records

    def _data(self, record: SandboxRecord) -> LocalSandboxData:
        if record.provider != self.name:
            raise BadRequest(f"record of provider {record.provider!r} given to the local adapter")
        data = LocalSandboxData.model_validate(record.data)
        expected = layout.workspace_path(self.settings, record.sandbox_id)
        if os.path.realpath(data.workspace) != os.path.realpath(expected):
            raise SandboxLost(
                f"sandbox {record.sandbox_id} does not live in this node's sandboxes directory",
                details={"sandbox_id": record.sandbox_id},
            )
        return data

    def _alive(self, data: LocalSandboxData, sandbox_id: str) -> None:
        if not os.path.isdir(data.workspace):
            raise SandboxLost(
                f"sandbox {sandbox_id} is gone (its workspace no longer exists)",
                details={"sandbox_id": sandbox_id},
            )

    def _owner(self, data: LocalSandboxData) -> tuple[int, int] | None:
        return (data.uid, data.gid) if data.dedicated_uid else None

    def _launch(
        self, data: LocalSandboxData, argv: list[str], *, network: bool, env: dict[str, str],
        cwd_rel: str = "", pass_fds: tuple[int, ...] = (),
    ) -> Launch:  # fmt: skip
        return build_launch(
            self.settings, data, argv, network=network, env=env, cwd_rel=cwd_rel, pass_fds=pass_fds
        )

    # ------------------------------------------------------------------ create

    async def create_sandbox(self, spec: SandboxSpec) -> SandboxRecord:
        unknown = set(spec.options) - set(SPEC_OPTIONS)
        if unknown:
            raise BadRequest(
                f"unknown local sandbox options {sorted(unknown)}; valid: {sorted(SPEC_OPTIONS)}",
                details={"field": "options"},
            )
        wanted = str(spec.options.get("isolation", self.settings.sandbox_isolation))
        if wanted not in SPEC_OPTIONS["isolation"]:
            raise BadRequest(
                f"options.isolation must be one of {', '.join(SPEC_OPTIONS['isolation'])}",
                details={"field": "options.isolation"},
            )
        _check_env(spec.env, "env")
        sandbox_id, uid, gid = await asyncio.to_thread(self._allocate)
        data = LocalSandboxData(
            workspace=str(layout.workspace_path(self.settings, sandbox_id)),
            uid=uid,
            gid=gid,
            dedicated_uid=running_as_root(),
            isolation="bwrap" if wanted != "rlimits" else "rlimits",
            network=spec.network,
            env=dict(spec.env),
            limits=limits_from(self.settings, spec.resources.memory_mb),
        )
        if wanted != "rlimits":
            reason = await bwrap_unavailable_reason(self.settings, data)
            if reason is not None and wanted == "bwrap":
                await asyncio.to_thread(layout.remove_sandbox_files, self.settings, sandbox_id)
                raise ProviderError(
                    f"bwrap isolation was requested but is not available here: {reason}",
                    details={"isolation": "bwrap", "reason": reason},
                )
            isolation: Isolation = "rlimits" if reason is not None else "bwrap"
            data = data.model_copy(update={"isolation": isolation})
        return SandboxRecord(
            provider=self.name,
            sandbox_id=sandbox_id,
            runtime=spec.runtime,
            isolation=data.isolation,
            data=data.model_dump(),
        )

    def _allocate(self) -> tuple[str, int, int]:
        """Pick an id (and, as root, a uid no other workspace has); make the workspace."""
        layout.ensure_sandboxes_dir(self.settings)
        root = running_as_root()
        for _ in range(UID_ATTEMPTS):
            sandbox_id = layout.new_sandbox_id()
            if not root:
                uid, gid = os.getuid(), os.getgid()
            else:
                uid = gid = layout.uid_for(self.settings, sandbox_id)
                if layout.uid_in_use(self.settings, uid):
                    continue
            path = layout.workspace_path(self.settings, sandbox_id)
            layout.make_workspace(path, uid, gid, chown=root)
            return sandbox_id, uid, gid
        raise ProviderError("could not allocate a free sandbox uid; try again")

    # ------------------------------------------------------------------ runs

    def _timeout(self, requested: float) -> float:
        if requested <= 0:
            raise BadRequest("timeout_s must be positive", details={"field": "timeout_s"})
        return min(requested, self.settings.max_run_timeout_s)

    async def run(self, record: SandboxRecord, request: ExecRequest) -> ExecResult:
        return await collect(self.run_stream(record, request))

    async def run_stream(
        self, record: SandboxRecord, request: ExecRequest
    ) -> AsyncGenerator[ExecEvent, None]:
        data = self._data(record)
        self._alive(data, record.sandbox_id)
        _check_env(request.env, "env")
        timeout_s = self._timeout(request.timeout_s)
        cwd_rel = files.resolve_dir(data.workspace, request.cwd)
        if request.language == "python":
            events = self._run_python(record.sandbox_id, data, request, timeout_s, cwd_rel)
        else:
            events = self._run_command(record.sandbox_id, data, request, timeout_s, cwd_rel)
        async with contextlib.aclosing(events):
            async for event in events:
                yield event

    async def _run_python(
        self, sandbox_id: str, data: LocalSandboxData, request: ExecRequest, timeout_s: float,
        cwd_rel: str,
    ) -> AsyncGenerator[ExecEvent, None]:  # fmt: skip
        python = runtimes.require(runtimes.python(), "python")
        lock = self._locks.setdefault(sandbox_id, asyncio.Lock())
        async with lock:
            interp = self._pythons.get(sandbox_id)
            if interp is None:

                def build(argv: list[str], fds: tuple[int, ...]) -> Launch:
                    return self._launch(data, argv, network=data.network, env={}, pass_fds=fds)

                interp = PythonInterpreter(
                    python.executable, build, self.settings.output_limit_bytes
                )
                self._pythons[sandbox_id] = interp
            cwd = f"{data.workspace_inside}/{cwd_rel}" if cwd_rel else None
            events = interp.execute(
                request.code, timeout_s=timeout_s, cwd=cwd,
                path=[data.site_packages_inside()], env=request.env,
            )  # fmt: skip
            async with contextlib.aclosing(events):
                async for event in events:
                    yield event

    async def _run_command(
        self, sandbox_id: str, data: LocalSandboxData, request: ExecRequest, timeout_s: float,
        cwd_rel: str,
    ) -> AsyncGenerator[ExecEvent, None]:  # fmt: skip
        script: str | None = None
        if request.language == "node":
            program = runtimes.require(runtimes.node(), "node").executable
            flag = "-e"
        else:
            program, flag = runtimes.require_bash(), "-c"
        encoded = request.code.encode()
        if len(encoded) > MAX_INLINE_CODE:
            name = f"run-{os.urandom(6).hex()}.{'js' if request.language == 'node' else 'sh'}"
            script = f"{layout.INTERNAL_DIR}/{name}"
            await asyncio.to_thread(
                files.write_file, data.workspace, script, encoded,
                max_bytes=len(encoded), owner=self._owner(data),
            )  # fmt: skip
            argv = [program, f"{data.workspace_inside}/{script}"]
        else:
            argv = [program, flag, request.code]
        launch = self._launch(data, argv, network=data.network, env=request.env, cwd_rel=cwd_rel)
        track = self._running.setdefault(sandbox_id, set())
        events = stream_process(
            launch, timeout_s=timeout_s, output_limit=self.settings.output_limit_bytes, track=track
        )
        try:
            async with contextlib.aclosing(events):
                async for event in events:
                    yield event
        finally:
            if script is not None:
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(data.workspace, script))

    # ------------------------------------------------------------------ packages

    async def install_package(
        self, record: SandboxRecord, request: InstallRequest
    ) -> InstallResult:
        spec = packages.validate(request.manager, request.package)
        data = self._data(record)
        self._alive(data, record.sandbox_id)
        python = runtimes.require(runtimes.python(), "python").executable
        npm = runtimes.npm()
        if request.manager == "npm":
            runtimes.require(runtimes.node(), "node")
            if npm is None:
                raise BadRequest("the npm runtime is not installed on this node")
        argv = packages.install_argv(
            request.manager, spec, python=python, npm=npm or "npm",
            workspace=data.workspace_inside, site=data.site_packages_inside(),
        )  # fmt: skip
        started = time.perf_counter()
        launch = self._launch(data, argv, network=True, env={})
        result = await collect(
            stream_process(
                launch,
                timeout_s=self._timeout(request.timeout_s),
                output_limit=self.settings.output_limit_bytes,
                track=self._running.setdefault(record.sandbox_id, set()),
            )
        )
        return InstallResult(
            success=result.exit_code == 0 and not result.timed_out,
            output=result.stdout + result.stderr,
            duration_ms=(time.perf_counter() - started) * 1000,
        )

    # ------------------------------------------------------------------ files

    async def write_file(self, record: SandboxRecord, path: str, data: bytes) -> None:
        sb = self._data(record)
        self._alive(sb, record.sandbox_id)
        await asyncio.to_thread(
            files.write_file, sb.workspace, path, bytes(data),
            max_bytes=self.settings.max_file_bytes, owner=self._owner(sb),
        )  # fmt: skip

    async def read_file(self, record: SandboxRecord, path: str) -> bytes:
        sb = self._data(record)
        self._alive(sb, record.sandbox_id)
        return await asyncio.to_thread(
            files.read_file, sb.workspace, path,
            max_bytes=self.settings.max_file_bytes, owner=self._owner(sb),
        )  # fmt: skip

    # ------------------------------------------------------------------ state

    async def get_state(self, record: SandboxRecord) -> SandboxState:
        data = self._data(record)
        alive = os.path.isdir(data.workspace)
        user_state = await asyncio.to_thread(layout.read_state, self.settings, record.sandbox_id)
        interp = self._pythons.get(record.sandbox_id)
        return SandboxState(
            status="running" if alive else "lost",
            provider=self.name,
            sandbox_id=record.sandbox_id,
            user_state=user_state,
            details={
                "isolation": data.isolation,
                # rlimits mode cannot take the network away
                "network": data.network or data.isolation == "rlimits",
                "uid": data.uid,
                "dedicated_uid": data.dedicated_uid,
                "python_interpreter": bool(interp and interp.alive),
            },
        )

    async def set_state(self, record: SandboxRecord, state: dict[str, Any]) -> SandboxState:
        data = self._data(record)
        self._alive(data, record.sandbox_id)
        if not isinstance(state, dict):
            raise BadRequest("state must be a JSON object", details={"field": "state"})
        await asyncio.to_thread(layout.write_state, self.settings, record.sandbox_id, state)
        return await self.get_state(record)

    async def is_alive(self, record: SandboxRecord) -> bool:
        return os.path.isdir(self._data(record).workspace)

    # ------------------------------------------------------------------ teardown

    async def delete_sandbox(self, record: SandboxRecord) -> None:
        data = self._data(record)
        interp = self._pythons.pop(record.sandbox_id, None)
        if interp is not None:
            await interp.stop()
        for pgid in list(self._running.pop(record.sandbox_id, set())):
            await kill_group(pgid)
        if data.dedicated_uid:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5.0
            while kill_uid(data.uid) and loop.time() < deadline:
                await asyncio.sleep(0.02)
                reap_orphans()
            reap_orphans()
        schedule_reap()
        await asyncio.to_thread(layout.remove_sandbox_files, self.settings, record.sandbox_id)
        self._locks.pop(record.sandbox_id, None)

    async def close(self) -> None:
        pythons, self._pythons = self._pythons, {}
        await asyncio.gather(*(interp.stop() for interp in pythons.values()))
