"""SessionHost: the Ray actor that hosts a live session. While bound to a session it owns
the session's compute handle (adapter + sandbox record), its transcript writer and its
metrics, and is their only writer. Hosts are pooled (cerver/actors/session_directory.py): a host is
bound on create/wake and unbound when its session closes or hibernates.

Every transcript entry is committed to the store before the call that produced it returns,
so an actor crash loses nothing that was acknowledged; on restart the actor reloads from the
store and says in the transcript what could not be kept (interpreter state).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, cast

import ray
from ray.actor import ActorHandle

from cerver.actors.calls import Moved
from cerver.actors.messages import (
    Attached,
    SessionRun,
    SessionStreamItem,
    StreamExited,
    StreamStarted,
)
from cerver.actors.provisioning import Provisioner, record_of
from cerver.adapters.base import (
    ComputeAdapter,
    ExecRequest,
    ExecResult,
    Resources,
    SandboxRecord,
)
from cerver.config import Settings
from cerver.errors import CerverError, Conflict, ProviderError, SandboxLost, SessionClosed
from cerver.metrics import MetricsState
from cerver.models import ComputeChoice
from cerver.redaction import mask_streams, mask_text
from cerver.store import SessionRow

log = logging.getLogger(__name__)


class SessionCore:
    """The actor's logic, plain async Python (the Ray actor below only hosts it)."""

    def __init__(
        self,
        settings: Settings,
        session_id: str,
        provisioner: Provisioner,
        *,
        restarted: bool = False,
    ) -> None:
        self.settings = settings
        self.session_id = session_id
        self.store = provisioner.store
        self.provisioner = provisioner
        self._row: SessionRow | None = None
        self._record: SandboxRecord | None = None
        self._restarted = restarted
        self._loaded = False
        self._lock = asyncio.Lock()
        self._load_lock = asyncio.Lock()
        self._lost = False
        self.inflight = 0
        self.last_used = time.monotonic()
        # Set while this session hibernates: calls wait for it, then wake it afresh.
        self.hibernating: asyncio.Future[None] | None = None

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        """Marks a call in progress: a busy session never hibernates."""
        self.inflight += 1
        self.last_used = time.monotonic()
        try:
            yield
        finally:
            self.inflight -= 1
            self.last_used = time.monotonic()

    # --- loading -------------------------------------------------------------------------
    async def _load(self) -> SessionRow:
        if not self._loaded:
            async with self._load_lock:
                if not self._loaded:
                    await self._load_from_store()
        assert self._row is not None
        return self._row

    async def _load_from_store(self) -> None:
        row = await asyncio.to_thread(self.store.sessions.get, self.session_id)
        if row is None:
            raise Conflict(f"session {self.session_id} does not exist in the store")
        self._row = row
        if row.compute_id:
            compute = await asyncio.to_thread(self.store.computes.get, row.compute_id)
            if compute is not None and compute.record:
                self._record = record_of(self.settings, compute.record)
        self._loaded = True
        if row.status == "closed":
            return
        if self._restarted:
            await self._append(
                "system",
                {
                    "event": "actor_restarted",
                    "message": "the session's host process restarted; in-memory "
                    "interpreter state (python variables) was lost, files were kept",
                },
            )
            self._restarted = False
        record = self._record
        alive = record is None or await (await self._adapter(record)).is_alive(record)
        if record is not None and row.provider is not None and not alive:
            await self._replace_lost(row, record)

    async def _adapter(self, record: SandboxRecord) -> ComputeAdapter:
        """The handle for this session's sandbox, with its account's current credentials."""
        assert self._row is not None
        return await self.provisioner.adapter(record.provider, self._row.account_id)

    async def _replace_lost(self, row: SessionRow, lost: SandboxRecord) -> None:
        """The sandbox vanished while the session was not live: provision a new one on the
        same provider and say so in the transcript."""
        await self._append(
            "compute",
            {
                "event": "sandbox_lost",
                "compute_id": row.compute_id,
                "sandbox_id": lost.sandbox_id,
                "message": "the sandbox no longer exists at the provider; its files and "
                "runtime state are lost; provisioning a replacement",
            },
        )
        spec = lost.data.get("spec") or {}  # adapters that keep their spec (e.g. `ray`)
        choice = ComputeChoice(
            provider=row.provider,
            runtime=lost.runtime,
            network=(
                {"allow": spec["egress_allow"]}  # type: ignore[arg-type]
                if spec.get("egress_allow") is not None
                else bool(spec.get("network", False))
            ),
            resources=Resources.model_validate(spec.get("resources") or {}),
            options=spec.get("options") or {},
        )
        await self._attach_locked(choice, "replace_lost_sandbox")

    async def _check_sandbox(self) -> None:
        """After a provider said the sandbox is lost: replace it before the next run."""
        async with self._lock:
            row, record = self._row, self._record
            if row is None or record is None or row.status == "closed":
                return
            if not await (await self._adapter(record)).is_alive(record):
                await self._replace_lost(row, record)

    def _metrics(self) -> MetricsState:
        assert self._row is not None
        return MetricsState.load(self._row.metrics)

    async def _append(
        self, type_: str, content: dict[str, Any], metrics: MetricsState | None = None,
        row_values: dict[str, Any] | None = None,
    ) -> int:  # fmt: skip
        """Commit one transcript entry; ``metrics`` and ``row_values`` update the session's
        row in the same transaction."""
        values: dict[str, Any] | None = dict(row_values) if row_values else None
        if metrics is not None:
            values = {**(values or {}), "metrics": metrics.dump()}
        seq = await asyncio.to_thread(
            self.store.sessions.append,
            self.session_id,
            type_,
            content,
            session_values=values,
            budget_bytes=self.settings.transcript_budget_bytes,
        )
        if metrics is not None and self._row is not None:
            self._row.metrics = metrics.dump()
        return seq

    # --- compute -------------------------------------------------------------------------
    async def attach(self, choice: ComputeChoice | None, reason: str) -> Attached:
        """Provision (or adopt) a compute and bind it; releases the previous one (a swap).
        On failure the previous compute stays bound and the transcript says what failed."""
        entered = time.perf_counter()
        async with self._lock:
            row = await self._load()
            loaded = time.perf_counter()
            if row.status == "closed":
                raise SessionClosed(f"session {self.session_id} is closed; create a new one")
            attached = await self._attach_locked(choice, reason)
        attached.timings["load"] = (loaded - entered) * 1000.0
        return attached

    async def _attach_locked(self, choice: ComputeChoice | None, reason: str) -> Attached:
        assert self._row is not None
        row = self._row
        metrics = self._metrics()
        old = (row.compute_id, self._record)
        now = time.time()
        timings: dict[str, float] = {}
        if choice is None:
            new = None
        else:
            try:
                provision_started = time.perf_counter()
                new = await self.provisioner.provision(row, choice)
                timings["provision"] = (time.perf_counter() - provision_started) * 1000.0
                timings["adapter"] = new.provision_time_ms
            except CerverError as exc:
                metrics.op(ok=False)
                await self._append(
                    "compute",
                    {"event": "provision_failed", "reason": reason, "error": exc.to_body()},
                    metrics,
                )
                raise
            metrics.op(ok=True)
            metrics.provision_time_ms = round(new.provision_time_ms, 3)
            metrics.attach(new.provider, new.price_per_hour_usd, now)
        if new is None:
            metrics.detach(now)
        carried = None
        if reason == "swap" and new is not None and old[1] is not None:
            carried = await self._carry(row.account_id, old[1], new.record)
        values = {
            "provider": new.provider if new else None,
            "compute_id": new.compute_id if new else None,
            "status": "ready",
            "runtime": new.record.runtime if new else row.runtime,
        }
        commit_started = time.perf_counter()
        await self._append(  # the row's new compute and its entry: one transaction
            "compute",
            {
                "event": "attached" if new else "detached",
                "reason": reason,
                "provider": values["provider"],
                "compute_id": values["compute_id"],
                "sandbox_id": new.record.sandbox_id if new else None,
                "isolation": new.record.isolation if new else None,
                "provision_time_ms": metrics.provision_time_ms if new else None,
                "previous_compute_id": old[0],
                **({"workspace": carried} if carried is not None else {}),
            },
            metrics,
            row_values=values,
        )
        for key, value in values.items():
            setattr(row, key, value)
        self._record = new.record if new else None
        timings["commit"] = (time.perf_counter() - commit_started) * 1000.0
        if old[0] and old[1] is not None:
            await self.provisioner.release(old[0], old[1], row.account_id)
        return Attached(
            timings=timings,
            provider=new.provider if new else None,
            compute_id=new.compute_id if new else None,
            sandbox_id=new.record.sandbox_id if new else None,
            isolation=new.record.isolation if new else None,
        )

    async def _carry(
        self, account_id: str, old: SandboxRecord, new: SandboxRecord
    ) -> dict[str, Any]:
        """Copy the workspace files from the old compute to the new one (swap)."""
        from cerver.actors.carry import carry_workspace

        source = await self.provisioner.adapter(old.provider, account_id)
        target = await self.provisioner.adapter(new.provider, account_id)
        return await carry_workspace(
            source, old, target, new, limit=self.provisioner.settings.max_file_bytes
        )

    async def close(self) -> None:
        async with self._lock:
            row = await self._load()
            if row.status == "closed":
                return
            metrics = self._metrics()
            now = time.time()
            metrics.detach(now)
            if row.compute_id and self._record is not None:
                await self.provisioner.release(row.compute_id, self._record, row.account_id)
            await asyncio.to_thread(
                self.store.sessions.update, self.session_id, status="closed", closed_at=now
            )
            row.status = "closed"
            await self._append("system", {"event": "closed"}, metrics)
            self._record = None

    async def hibernate(self, idle_s: float) -> None:
        """Give the host back: the store already has everything acknowledged; the sandbox
        stays (files kept), in-process runtime state (a Python interpreter) does not."""
        async with self._lock:
            row = await self._load()
            if row.status == "closed":
                return
            if self._record is not None:
                adapter = await self._adapter(self._record)
                await adapter.suspend(self._record)
                await adapter.forget(self._record)  # this host keeps nothing of it
            await self._append(
                "system",
                {
                    "event": "hibernated",
                    "idle_s": round(idle_s, 3),
                    "kept": ["transcript", "metrics", "sandbox files"],
                    "lost": ["in-memory interpreter state (python variables)"],
                },
            )

    # --- running -------------------------------------------------------------------------
    async def _ready(self) -> tuple[SessionRow, SandboxRecord]:
        row = await self._load()
        if self._lost:
            self._lost = False
            await self._check_sandbox()
        if row.status == "closed":
            raise SessionClosed(f"session {self.session_id} is closed; create a new session")
        if self._record is None or row.provider is None or row.compute_id is None:
            raise await self.provisioner.no_compute_error(row)
        return row, self._record

    async def run(self, request: ExecRequest, received_at: float) -> SessionRun:
        entered = time.perf_counter()
        waking = not self._loaded
        row, record = await self._ready()
        load_ms = (time.perf_counter() - entered) * 1000.0 if waking else 0.0
        adapter = await self._adapter(record)
        sandbox_started = time.perf_counter()
        try:
            result = await adapter.run(record, request)
        except ProviderError as exc:
            # Lost: the failing call answers 502 (its effects are unknown); the next call
            # gets a replacement sandbox.
            self._lost = isinstance(exc, SandboxLost)
            metrics = self._metrics()
            metrics.op(ok=False)
            await self._append(
                "exec", {**_exec_content(request, adapter), "error": exc.to_body()}, metrics
            )
            raise
        latency_ms = (time.time() - received_at) * 1000.0
        metrics = self._metrics()
        metrics.op(ok=True)
        metrics.exec_done(latency_ms, time.time())
        metrics.egress_denied_count += len(result.egress_denied)
        commit_started = time.perf_counter()
        seq = await self._append(
            "exec",
            {**_exec_content(request, adapter), "result": _result_content(result, adapter)},
            metrics,
        )
        done = time.perf_counter()
        sandbox_ms = (commit_started - sandbox_started) * 1000.0
        commit_ms = (done - commit_started) * 1000.0
        return SessionRun(
            result=result,
            seq=seq,
            provider=row.provider or record.provider,
            compute_id=row.compute_id or "",
            latency_ms=latency_ms,
            timings={
                "load": load_ms,  # a wake: the session's rows read back from the store
                "sandbox": sandbox_ms,
                "commit": commit_ms,
                "host": (done - entered) * 1000.0 - sandbox_ms - commit_ms - load_ms,
            },
        )

    async def run_stream(
        self, request: ExecRequest, received_at: float
    ) -> AsyncIterator[SessionStreamItem]:
        row, record = await self._ready()
        adapter = await self._adapter(record)
        open_ms = (time.time() - received_at) * 1000.0
        yield StreamStarted(provider=row.provider or record.provider, stream_open_ms=open_ms)
        final: ExecResult | None = None
        try:
            async for event in adapter.run_stream(record, request):
                if event.type == "exit":
                    final = event.result
                    continue
                yield event
        except SandboxLost:
            self._lost = True
            raise
        finally:
            metrics = self._metrics()
            metrics.op(ok=final is not None)
            content = _exec_content(request, adapter) | {"stream": True}
            if final is not None:
                latency_ms = (time.time() - received_at) * 1000.0
                metrics.exec_done(latency_ms, time.time(), stream=True, stream_open_ms=open_ms)
                metrics.egress_denied_count += len(final.egress_denied)
                content["result"] = _result_content(final, adapter)
            else:
                content["result"] = {"abandoned": True}
            seq = await asyncio.shield(self._append("exec", content, metrics))
        if final is not None:
            yield StreamExited(result=final, seq=seq)


# The account's credentials the session's adapter was built with (resolved at use, held in
# its memory only) never reach the transcript: not in the code a caller pasted them into,
# not in what the run printed.


def _exec_content(request: ExecRequest, adapter: ComputeAdapter) -> dict[str, Any]:
    return {
        "language": request.language,
        "code": mask_text(request.code, adapter.credentials.values()),
        "cwd": request.cwd,
        "timeout_s": request.timeout_s,
        # Environment values may hold secrets: the transcript keeps the names only.
        "env_names": sorted(request.env),
    }


def _result_content(result: ExecResult, adapter: ComputeAdapter) -> dict[str, Any]:
    content = result.model_dump(exclude={"interpreter_restarted", "egress_denied"}) | (
        {"interpreter_restarted": True} if result.interpreter_restarted else {}
    )
    if result.egress_denied:  # what the egress allowlist refused (network.allow)
        content["egress_denied"] = [denial.model_dump() for denial in result.egress_denied]
    return mask_streams(content, adapter.credentials.values())


class NotBound(Moved):
    """This host does not (or no longer) serve that session: look it up again."""


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)
class SessionHost:
    """A pooled, restartable Ray actor that hosts up to ``sessions_per_host`` live sessions.

    Sessions are I/O-bound (their work runs in sandbox processes), so one async host
    process serves many of them; a node holds far more sessions than it has processes."""

    def __init__(self, settings: Settings, directory: ActorHandle) -> None:
        from cerver.store import Store

        self.settings = settings
        self.provisioner = Provisioner(settings, Store.open(settings.database_url))
        context = ray.get_runtime_context()
        self.actor_id: str = context.get_actor_id() or ""
        self.directory = directory  # the session directory that started this host
        self.cores: dict[str, SessionCore] = {}
        self._watcher: asyncio.Task[None] | None = None
        if context.was_current_actor_reconstructed:
            # Restarted after a crash: the directory says which sessions we were serving.
            ids = cast("list[str]", ray.get(self.directory.who_am_i.remote(self.actor_id)))
            for session_id in ids:
                self.cores[session_id] = SessionCore(
                    settings, session_id, self.provisioner, restarted=True
                )

    # --- lifecycle -----------------------------------------------------------------------
    async def ready(self) -> str:
        self._start_watcher()
        await self.provisioner.warm(self.settings.sandbox_pool_size)
        return self.actor_id

    async def bind(self, session_id: str) -> None:
        self._start_watcher()
        if session_id not in self.cores:
            self.cores[session_id] = SessionCore(self.settings, session_id, self.provisioner)

    def _start_watcher(self) -> None:
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        period = max(0.05, min(self.settings.hibernate_after_s / 4.0, 5.0))
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            due = [
                (core, now - core.last_used)
                for core in self.cores.values()
                if core.inflight == 0
                and core.hibernating is None
                and now - core.last_used > self.settings.hibernate_after_s
            ]
            # At once: each waits on its sandbox's processes to die, not on the CPU.
            results = await asyncio.gather(
                *(self._hibernate(core, idle) for core, idle in due), return_exceptions=True
            )
            for (core, _idle), result in zip(due, results, strict=True):
                if isinstance(result, Exception):
                    log.warning("session %s did not hibernate: %r", core.session_id, result)

    async def _hibernate(self, core: SessionCore, idle_s: float) -> None:
        """Hibernate and unbind; calls that arrive meanwhile wait, then bind afresh."""
        if core.hibernating is not None:
            await asyncio.shield(core.hibernating)
            return
        done = core.hibernating = asyncio.get_running_loop().create_future()
        try:
            await core.hibernate(idle_s)
            await self._unbind(core.session_id)
        finally:  # failed: still bound, tried again at the next tick
            core.hibernating = None
            done.set_result(None)

    async def _unbind(self, session_id: str) -> None:
        self.cores.pop(session_id, None)
        me = ray.get_runtime_context().current_actor
        keep = await self.directory.release.remote(session_id, self.actor_id, me)
        if not keep and not self.cores:
            # Surplus empty host: leave once the current call has answered.
            asyncio.get_running_loop().call_later(0.2, ray.kill, me)

    async def _bound(self, session_id: str) -> SessionCore:
        core = self.cores.get(session_id)
        while core is not None and core.hibernating is not None:
            await asyncio.shield(core.hibernating)  # then unbound: the caller binds afresh
            core = self.cores.get(session_id)
        if core is None:
            raise NotBound(f"host {self.actor_id} does not serve {session_id}")
        return core

    # --- session operations --------------------------------------------------------------
    async def attach(self, session_id: str, choice: ComputeChoice | None, reason: str) -> Attached:
        core = await self._bound(session_id)
        with core.busy():
            return await core.attach(choice, reason)

    async def run(self, session_id: str, request: ExecRequest, received_at: float) -> SessionRun:
        core = await self._bound(session_id)
        with core.busy():
            return await core.run(request, received_at)

    async def run_stream(
        self, session_id: str, request: ExecRequest, received_at: float
    ) -> AsyncIterator[SessionStreamItem]:
        core = await self._bound(session_id)
        with core.busy():
            async for item in core.run_stream(request, received_at):
                yield item

    async def close(self, session_id: str) -> None:
        core = await self._bound(session_id)
        with core.busy():
            await core.close()
        await self._unbind(session_id)

    async def abandon(self, session_id: str) -> None:
        """Unbind without touching the store (the session's create failed and was undone)."""
        if session_id in self.cores:
            await self._unbind(session_id)

    async def hibernate_now(self, session_id: str) -> None:
        """Hibernate at once, as the idle timer would (used by tests)."""
        core = await self._bound(session_id)
        await self._hibernate(core, time.monotonic() - core.last_used)

    async def sessions(self) -> list[str]:
        return sorted(self.cores)

    async def footprint(self) -> dict[str, list[str]]:
        """What this host holds in memory: the sessions it serves and the sandboxes its
        adapters remember, warm pool included (hibernated sessions are in neither)."""
        return {
            "sessions": sorted(self.cores),
            "sandboxes_in_memory": sorted(self.provisioner.sandboxes_in_memory()),
        }

    async def pid(self) -> int:
        import os

        return os.getpid()
