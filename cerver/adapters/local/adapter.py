"""``LocalAdapter``: sandboxes as confined processes on this node (the embedded default).

The adapter only orchestrates; confinement is ``isolation``, spawning, reaping, output
capture and the run loop are ``spawning``, ``reaping``, ``capture`` and ``run_loop``, the
host side of the per-sandbox supervisor every run goes through ``host_supervisor``, of the
persistent interpreter ``host_interpreter`` (the programs they talk to, which run inside
the sandbox, are in ``inside/``), the warm pool ``pool``, file access ``files``, the
on-disk layout and record data ``layout``, package specs ``packages``. What the adapter
holds for each sandbox in memory is one ``LiveSandbox``.

A sandbox is confined once: its supervisor is started through bwrap / mount hiding / uid
drop / rlimits, and every shell, node and Python run is spawned by it. Package installs
(which get the network for that command only) are the one thing launched fresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
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
    env_problem,
)
from cerver.adapters.local import disk, egress_inside, files, layout, packages, runtimes
from cerver.adapters.local.cgroups import SandboxCgroups
from cerver.adapters.local.egress import EgressProxy
from cerver.adapters.local.host_interpreter import PythonInterpreter
from cerver.adapters.local.host_supervisor import ShellTemplate, Supervisor, SupervisorHung
from cerver.adapters.local.isolation import (
    Launch,
    build_launch,
    bwrap_unavailable_reason,
    limits_from,
    path_inside,
    refuse_tenant_isolation,
    running_as_root,
    sandbox_env,
)
from cerver.adapters.local.layout import Limits, LocalSandboxData
from cerver.adapters.local.pool import Ready, WarmPool
from cerver.adapters.local.reaping import kill_group, kill_uid, reap_orphans, schedule_reap
from cerver.adapters.local.run_loop import collect, stream_process, stream_run
from cerver.errors import BadRequest, ProviderError, SandboxLost, Unprocessable

SPEC_OPTIONS: dict[str, tuple[str, ...]] = {}  # none: isolation is server policy
MAX_INLINE_CODE = 100 * 1024  # beyond this, code goes through a file (argv strings max 128 KiB)
UID_ATTEMPTS = 8
# Supervisor starts at once per adapter (issue 16, burst): a start is mostly the kernel's
# namespace and mount setup, which the machine serialises anyway, so a burst's starts queue
# here and each one's deadline (host_supervisor.START_TIMEOUT_S) times the start itself.
START_PARALLEL = 4


def _check_env(env: dict[str, str], field: str) -> None:
    for key, value in env.items():
        problem = env_problem(key, value)
        if problem is not None:
            raise Unprocessable(f"{field}: {problem}", details={"field": field, "name": key})


@dataclass
class LiveSandbox:
    """What this adapter instance holds in memory for one sandbox (its record is the rest)."""

    supervisor: Supervisor | None = None
    python: PythonInterpreter | None = None
    python_lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one Python run at a time
    installs: set[int] = field(default_factory=set)  # pgids of installs in progress


class LocalAdapter(ComputeAdapter):
    name = "local"
    egress_allowlist = True

    def __init__(self, settings: Any, credentials: dict[str, str] | None = None) -> None:
        super().__init__(settings, credentials)
        self._live: dict[str, LiveSandbox] = {}
        self._pool = WarmPool(
            self._provision_pooled, self._discard_pooled, max_size=settings.sandbox_pool_max
        )
        self._egress = EgressProxy(settings)  # network.allow sandboxes' way out (egress.py)
        self._cgroups = SandboxCgroups(self.settings)
        self._disk: dict[str, disk.SandboxDisk] = {}  # each sandbox's workspace vs its budget
        self._starts = asyncio.Semaphore(START_PARALLEL)

    # ------------------------------------------------------------------ warm pool

    async def warm(self, count: int) -> None:
        """Keep ``count`` sandboxes ready (workspace, supervisor, Python interpreter) for
        ``create_sandbox``. Returns at once: filling and refilling run in the background."""
        self._pool.resize(count)

    def pool_size(self) -> int:
        """How many ready sandboxes the pool holds right now."""
        return len(self._pool)

    def _pool_fits(self, spec: SandboxSpec) -> Callable[[Ready], bool]:
        limits = limits_from(self.settings, spec.resources.memory_mb, spec.resources.cpu)

        def fits(ready: Ready) -> bool:
            return not spec.network and spec.egress_allow is None and ready.data.limits == limits

        return fits

    async def _provision_pooled(self) -> Ready:
        sandbox_id, data = await self._provision(network=False, egress_allow=None, env={})
        try:
            await self._supervisor(sandbox_id, data, pooled=True)
            interp = self._interpreter(sandbox_id, data)
            if interp is not None:
                await interp.start()
        except BaseException:
            await self._teardown(sandbox_id, data, remove=True)
            raise
        return Ready(sandbox_id, data)

    async def _discard_pooled(self, ready: Ready) -> None:
        await self._teardown(ready.sandbox_id, ready.data, remove=True)

    # ------------------------------------------------------------------ records

    def _data(self, record: SandboxRecord) -> LocalSandboxData:
        if record.provider != self.name:
            raise BadRequest(f"record of provider {record.provider!r} given to the local adapter")
        data = LocalSandboxData.model_validate(record.data)
        expected = str(layout.workspace_path(self.settings, record.sandbox_id))
        # The same string is the same place; only a different spelling is resolved (10
        # lstat calls a run, on the event loop, for the common case saved).
        if data.workspace != expected and os.path.realpath(data.workspace) != os.path.realpath(
            expected
        ):
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
        limits = data.limits
        if not limits.pids_max:  # a record made before sandboxes had cgroups
            limits = limits_from(self.settings, limits.memory_mb)
        procs = self._cgroups.procs_files(os.path.basename(data.workspace), limits)
        return build_launch(
            self.settings, data, argv, network=network, env=env, cwd_rel=cwd_rel,
            pass_fds=pass_fds, cgroup_procs=procs,
        )  # fmt: skip

    # ------------------------------------------------------------------ create

    async def create_sandbox(self, spec: SandboxSpec) -> SandboxRecord:
        """A sandbox from the warm pool when the spec fits one (no network, the default
        isolation and limits; ``env`` is applied per run, so it does not matter), else a
        freshly provisioned one whose supervisor starts with its first run."""
        refuse_tenant_isolation(spec.options, self.settings)
        unknown = set(spec.options) - set(SPEC_OPTIONS)
        if unknown:
            raise BadRequest(
                f"unknown local sandbox options {sorted(unknown)}; valid: {sorted(SPEC_OPTIONS)}",
                details={"field": "options"},
            )
        _check_env(spec.env, "env")
        if spec.egress_allow is not None:
            egress_inside.require_bwrap(self.settings.sandbox_isolation)
        ready = self._pool.take(self._pool_fits(spec))
        if ready is not None:
            sandbox_id, data = ready.sandbox_id, ready.data
            data = data.model_copy(update={"env": dict(spec.env)})
        else:
            sandbox_id, data = await self._provision(
                network=spec.network or spec.egress_allow is not None,
                egress_allow=spec.egress_allow,
                env=spec.env,
                memory_mb=spec.resources.memory_mb,
                cpus=spec.resources.cpu,
            )
        return SandboxRecord(
            provider=self.name,
            sandbox_id=sandbox_id,
            runtime=spec.runtime,
            isolation=data.isolation,
            data=data.model_dump(),
        )

    async def _provision(
        self, *, network: bool, egress_allow: list[str] | None, env: dict[str, str],
        memory_mb: int | None = None, cpus: float | None = None,
    ) -> tuple[str, LocalSandboxData]:  # fmt: skip
        """Make the workspace under the server's isolation policy; no process is started.

        Fails closed: unless the operator chose ``rlimits``, a node where bwrap does not
        work refuses to make sandboxes (it never falls back to weaker isolation)."""
        rlimits = self.settings.sandbox_isolation == "rlimits"
        limits = limits_from(self.settings, memory_mb, cpus)
        sandbox_id, uid, gid = await asyncio.to_thread(self._allocate, limits)
        data = LocalSandboxData(
            workspace=str(layout.workspace_path(self.settings, sandbox_id)),
            uid=uid,
            gid=gid,
            dedicated_uid=running_as_root(),
            isolation="rlimits" if rlimits else "bwrap",
            network=network,
            egress_allow=egress_allow,
            env=dict(env),
            limits=limits,
        )
        if not rlimits:
            reason = await bwrap_unavailable_reason(self.settings, data)
            if reason is not None:
                await asyncio.to_thread(self._unmake, sandbox_id)
                raise ProviderError(
                    "this node refuses to run code: its isolation policy is bwrap and bwrap "
                    f"does not work here ({reason}); the operator must fix bwrap or set "
                    "CERVER_SANDBOX_ISOLATION=rlimits to accept weaker isolation",
                    details={"isolation": "bwrap", "reason": reason},
                )
        return sandbox_id, data

    def _allocate(self, limits: Limits) -> tuple[str, int, int]:
        """Pick an id (and, as root, a uid no other workspace has); make the workspace and
        the sandbox's cgroup (in this one worker-thread hop: the first run then only joins
        it). Under CERVER_CGROUPS=required without usable cgroups, raise before anything
        is made (fail closed)."""
        self._cgroups.backend()
        layout.ensure_sandboxes_dir(self.settings)
        root = running_as_root()
        for _ in range(UID_ATTEMPTS):
            sandbox_id = layout.new_sandbox_id()
            if not root:
                uid, gid = os.getuid(), os.getgid()
            else:
                uid = gid = layout.uid_for(self.settings, sandbox_id)
                if not layout.claim_uid(self.settings, uid, sandbox_id):
                    continue
            path = layout.workspace_path(self.settings, sandbox_id)
            layout.make_workspace(path, uid, gid, chown=root)
            try:
                self._cgroups.procs_files(sandbox_id, limits)
            except BaseException:
                self._unmake(sandbox_id)
                raise
            return sandbox_id, uid, gid
        raise ProviderError("could not allocate a free sandbox uid; try again")

    def _unmake(self, sandbox_id: str) -> None:
        """Undo ``_allocate``: the cgroup and the workspace (blocking)."""
        self._cgroups.release(sandbox_id)
        layout.remove_sandbox_files(self.settings, sandbox_id)

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
        async with contextlib.aclosing(events), self._disk_watch(record.sandbox_id, data):
            async for event in events:
                if event.type == "exit" and event.result is not None:
                    denied = self._egress.take_denials(record.sandbox_id)
                    event.result.egress_denied = [*event.result.egress_denied, *denied]
                yield event

    def _disk_watch(
        self, sandbox_id: str, data: LocalSandboxData
    ) -> contextlib.AbstractAsyncContextManager[object]:
        """While a run or install is in flight: past the workspace's disk budget, kill
        everything of the sandbox (the run says why)."""
        sandbox_disk = self._disk.get(sandbox_id)
        if sandbox_disk is None:
            budget = disk.Budget.of(self.settings)
            if budget is None:
                return contextlib.nullcontext()

            async def over(reason: str) -> None:
                note = f"{reason}; all its processes were killed (delete files to go on)"
                live = self._live.get(sandbox_id)
                if live is not None and live.supervisor is not None:
                    await live.supervisor.stop(note)
                if live is not None:
                    for pgid in list(live.installs):
                        await kill_group(pgid)
                await self._kill_cgroup(sandbox_id)

            sandbox_disk = self._disk[sandbox_id] = disk.SandboxDisk(budget, data.workspace, over)
        return sandbox_disk.watch()

    async def _supervisor(
        self, sandbox_id: str, data: LocalSandboxData, *, pooled: bool = False
    ) -> Supervisor:
        """The sandbox's running supervisor, started (or restarted) when needed (at most
        ``START_PARALLEL`` starts at once; one that is not for the pool delays its growth)."""
        live = self._live.setdefault(sandbox_id, LiveSandbox())
        sup = live.supervisor
        if sup is None:
            python = runtimes.require(runtimes.python(), "python").executable

            def build(argv: list[str]) -> Launch:
                return self._launch(data, argv, network=data.network, env={})

            base = data.model_copy(update={"env": {}})  # spec env is added per run
            bash = runtimes.require_bash()
            shell = ShellTemplate(bash, sandbox_env(base, {}), path_inside(data))
            sup = live.supervisor = Supervisor(
                python, build, shell, kill_all=lambda: self._kill_cgroup(sandbox_id)
            )
        if egress_inside.restricted(data):
            await self._egress.ensure(sandbox_id, data)
        if not sup.alive:
            if not pooled:
                self._pool.cold_start()
            async with self._starts:
                await sup.ensure_started()
        return sup

    def _interpreter(self, sandbox_id: str, data: LocalSandboxData) -> PythonInterpreter | None:
        live = self._live[sandbox_id]
        interp = live.python
        python = runtimes.python()
        if interp is None and python is not None:
            assert live.supervisor is not None
            interp = PythonInterpreter(
                python.executable,
                live.supervisor,
                self.settings.output_limit_bytes,
                env=sandbox_env(data, {}),
                cwd=path_inside(data),
            )
            live.python = interp
        return interp

    async def _run_python(
        self, sandbox_id: str, data: LocalSandboxData, request: ExecRequest, timeout_s: float,
        cwd_rel: str,
    ) -> AsyncGenerator[ExecEvent, None]:  # fmt: skip
        runtimes.require(runtimes.python(), "python")
        async with self._live.setdefault(sandbox_id, LiveSandbox()).python_lock:
            await self._supervisor(sandbox_id, data)
            interp = self._interpreter(sandbox_id, data)
            assert interp is not None
            cwd = path_inside(data, cwd_rel) if cwd_rel else None
            events = interp.execute(
                request.code, timeout_s=timeout_s, cwd=cwd,
                path=[data.site_packages_inside()], env={**data.env, **request.env},
            )  # fmt: skip
            async with contextlib.aclosing(events):
                async for event in events:
                    yield event

    async def _run_command(
        self, sandbox_id: str, data: LocalSandboxData, request: ExecRequest, timeout_s: float,
        cwd_rel: str,
    ) -> AsyncGenerator[ExecEvent, None]:  # fmt: skip
        script: str | None = None
        argv: list[str] | None = None  # None: an armed shell runs the code
        if "\x00" in request.code:
            raise BadRequest("code must not contain NUL bytes", details={"field": "code"})
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
        elif request.language == "node":
            argv = [program, flag, request.code]
        limit, cwd = self.settings.output_limit_bytes, path_inside(data, cwd_rel)
        try:
            for attempt in range(2):  # a hung supervisor is killed; the retry gets a fresh one
                sup = await self._supervisor(sandbox_id, data)
                try:
                    if argv is None:
                        added = {**data.env, **request.env}
                        proc = await sup.run_shell(request.code, env=added, cwd=cwd, limit=limit)
                    else:
                        env = sandbox_env(data, request.env)
                        proc = await sup.spawn(argv, env=env, cwd=cwd, limit=limit)
                    break
                except SupervisorHung:
                    if attempt:
                        raise
            events = stream_run(
                proc, timeout_s=timeout_s, output_limit=self.settings.output_limit_bytes
            )
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
            allow_sdists=self.settings.sandbox_allow_sdists,
        )  # fmt: skip
        started = time.perf_counter()
        if egress_inside.restricted(data):
            await self._egress.ensure(record.sandbox_id, data)

        def build() -> Launch:
            return self._launch(data, argv, network=True, env={})

        launch = build()
        async with self._disk_watch(record.sandbox_id, data) as watch:
            result = await collect(
                stream_process(
                    launch,
                    timeout_s=self._timeout(request.timeout_s),
                    output_limit=self.settings.output_limit_bytes,
                    track=self._live.setdefault(record.sandbox_id, LiveSandbox()).installs,
                    rebuild=build,
                )
            )
        tripped = getattr(watch, "tripped", None)
        return InstallResult(
            success=result.exit_code == 0 and not result.timed_out and tripped is None,
            output=result.stdout + result.stderr + (f"\n[cerver: {tripped}]\n" if tripped else ""),
            duration_ms=(time.perf_counter() - started) * 1000,
            egress_denied=self._egress.take_denials(record.sandbox_id),
        )

    # ------------------------------------------------------------------ files

    async def write_file(self, record: SandboxRecord, path: str, data: bytes) -> None:
        sb = self._data(record)
        self._alive(sb, record.sandbox_id)
        await asyncio.to_thread(disk.check_write, self.settings, sb.workspace, len(data))
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
        live = self._live.get(record.sandbox_id, LiveSandbox())
        interp, sup = live.python, live.supervisor
        return SandboxState(
            status="running" if alive else "lost",
            provider=self.name,
            sandbox_id=record.sandbox_id,
            user_state=user_state,
            details={
                "isolation": data.isolation,
                # rlimits mode cannot take the network away
                "network": data.network or data.isolation == "rlimits",
                "egress_allow": data.egress_allow,
                "uid": data.uid,
                "dedicated_uid": data.dedicated_uid,
                "python_interpreter": bool(interp and interp.alive),
                "supervisor": bool(sup and sup.alive),
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
        await self._teardown(record.sandbox_id, self._data(record), remove=True)

    async def suspend(self, record: SandboxRecord) -> None:
        """Stop the sandbox's processes (supervisor, interpreter); its files stay and the
        next run starts them again (Python state is lost, and the run says so)."""
        await self._teardown(record.sandbox_id, self._data(record), remove=False)

    async def forget(self, record: SandboxRecord) -> None:
        """After ``suspend`` (its session hibernated and left this process): drop the
        sandbox's in-memory state here, its egress listener (an open socket) included.
        Anything of it still running is stopped first: forgetting never leaves a process
        without a handle. The next run, in any process, starts afresh from the record."""
        live = self._live.get(record.sandbox_id)
        if live is not None and (
            live.installs or (live.supervisor is not None and live.supervisor.alive)
        ):
            await self._teardown(record.sandbox_id, self._data(record), remove=False)
        self._live.pop(record.sandbox_id, None)
        if (sandbox_disk := self._disk.pop(record.sandbox_id, None)) is not None:
            sandbox_disk.close()  # its budget is measured again where it wakes
        await self._egress.forget(record.sandbox_id)

    def sandboxes_in_memory(self) -> set[str]:
        return set(self._live) | set(self._disk)

    async def _teardown(self, sandbox_id: str, data: LocalSandboxData, *, remove: bool) -> None:
        """Kill everything of the sandbox; with ``remove``, forget it and delete its files
        (without, the next run restarts the processes and says the Python state was lost)."""
        live = self._live.pop(sandbox_id, None) if remove else self._live.get(sandbox_id)
        if remove and (sandbox_disk := self._disk.pop(sandbox_id, None)) is not None:
            sandbox_disk.close()
        if live is not None:
            if live.python is not None:
                await live.python.stop()
            if live.supervisor is not None:
                await live.supervisor.stop()
            installs, live.installs = live.installs, set()
            for pgid in installs:
                await kill_group(pgid)
        if self._cgroups.in_use:  # what escaped the above
            await asyncio.to_thread(self._cgroups.release, sandbox_id)
        if data.dedicated_uid:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5.0
            # kill_uid reads every process of the node: off the event loop
            while await asyncio.to_thread(kill_uid, data.uid) and loop.time() < deadline:
                await asyncio.sleep(0.02)
                reap_orphans()
            reap_orphans()
        schedule_reap()
        if remove:
            await self._egress.forget(sandbox_id)
            await asyncio.to_thread(layout.remove_sandbox_files, self.settings, sandbox_id)

    async def close(self) -> None:
        """Discard the warm pool (processes and workspaces) and stop every supervisor and
        interpreter of this instance; handed-out sandboxes keep their workspaces."""
        await self._pool.close()
        await self._egress.close()
        for sandbox_disk in self._disk.values():
            sandbox_disk.close()
        self._disk.clear()
        lives, self._live = list(self._live.values()), {}
        await asyncio.gather(*(live.python.stop() for live in lives if live.python is not None))
        await asyncio.gather(
            *(live.supervisor.stop() for live in lives if live.supervisor is not None)
        )
        await asyncio.to_thread(self._cgroups.close)

    async def _kill_cgroup(self, sandbox_id: str) -> None:
        """The last step of a kill that was not answered: everything in the sandbox's cgroup."""
        await asyncio.to_thread(self._cgroups.kill, sandbox_id)
