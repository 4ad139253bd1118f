"""``RayAdapter``: the ``local`` sandbox, hosted in its own Ray actor placed by request.

``create_sandbox`` turns ``spec.resources`` and ``spec.options["node_labels"]`` into the
host actor's resource request and label selector (``placement``), refuses at once a request
that no node of the cluster can ever satisfy (409 ``compute_unavailable``, saying what is
missing), and otherwise waits up to ``PLACEMENT_WAIT_S`` for Ray to place the host. A
request that is feasible but finds no free capacity in that time is withdrawn (the pending
actor is killed, so nothing leaks and no capacity is taken later by nobody) and answered
with a 409 whose ``details.state`` is ``"waiting_for_capacity"``: retry later. A later
issue may turn this into a session status that waits on the caller's behalf.

Every other operation goes to the host actor, which runs it with a ``LocalAdapter``. The
record keeps the actor's name and the inner local record; a host that is gone (its node
died) makes the sandbox ``lost`` (``SandboxLost``, 502), never silently re-created here.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncGenerator
from typing import Any

import ray
from pydantic import BaseModel
from ray.actor import ActorHandle
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, RayTaskError

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
from cerver.adapters.local.isolation import refuse_tenant_isolation
from cerver.adapters.raycluster import cluster
from cerver.adapters.raycluster.host import SandboxHost
from cerver.adapters.raycluster.placement import Placement, placement_from, shortfall
from cerver.errors import BadRequest, CerverError, ComputeUnavailable, ProviderError, SandboxLost

# How long create_sandbox waits for a feasible request to be placed before answering 409.
PLACEMENT_WAIT_S = 10.0
# A host whose capacity is free but whose worker process is still starting gets this more.
STARTUP_WAIT_S = 60.0
# Options this provider reads itself; everything else is refused (``isolation`` with 422:
# it is the server's policy, not a tenant option).
SPEC_OPTIONS = ("node_labels",)
ACTOR_PREFIX = "cerver-raysb-"


class RaySandboxData(BaseModel):
    """What ``SandboxRecord.data`` holds for the ``ray`` provider."""

    actor: str  # the host actor's name (in ``namespace``)
    namespace: str
    node_id: str  # where it was placed
    placement: Placement
    inner: SandboxRecord  # the local sandbox inside the host
    # Enough to provision a like-for-like replacement if this one is lost.
    spec: dict[str, Any]


class RayAdapter(ComputeAdapter):
    name = "ray"
    egress_allowlist = True  # the host actor's LocalAdapter runs the proxy (egress.py)

    def __init__(self, settings: Any, credentials: dict[str, str] | None = None) -> None:
        super().__init__(settings, credentials)
        self._hosts: dict[str, ActorHandle] = {}

    # ------------------------------------------------------------------ records

    def _data(self, record: SandboxRecord) -> RaySandboxData:
        if record.provider != self.name:
            raise BadRequest(f"record of provider {record.provider!r} given to the ray adapter")
        return RaySandboxData.model_validate(record.data)

    def _host(self, data: RaySandboxData) -> ActorHandle:
        handle = self._hosts.get(data.actor)
        if handle is None:
            try:
                handle = ray.get_actor(data.actor, namespace=data.namespace)
            except ValueError:
                raise _lost(data) from None
            self._hosts[data.actor] = handle
        return handle

    async def forget(self, record: SandboxRecord) -> None:
        """The session hibernated and left this process: drop the cached actor handle (the
        sandbox's own actor keeps running; the next call looks it up by name)."""
        self._hosts.pop(self._data(record).actor, None)

    def sandboxes_in_memory(self) -> set[str]:
        return set(self._hosts)  # by actor name: one actor per sandbox

    async def _call(self, record: SandboxRecord, op: str, *args: Any) -> Any:
        data = self._data(record)
        try:
            return await self._host(data).call.remote(op, data.inner, *args)
        except RayTaskError as exc:
            raise _unwrap(exc) from None
        except (ActorDiedError, ActorUnavailableError, RayActorError):
            self._hosts.pop(data.actor, None)
            raise _lost(data) from None

    # ------------------------------------------------------------------ create

    async def create_sandbox(self, spec: SandboxSpec) -> SandboxRecord:
        refuse_tenant_isolation(spec.options, self.settings)
        unknown = set(spec.options) - set(SPEC_OPTIONS)
        if unknown:
            raise BadRequest(
                f"unknown ray sandbox options {sorted(unknown)}; valid: {list(SPEC_OPTIONS)}",
                details={"field": "options"},
            )
        placement = placement_from(spec)
        if not ray.is_initialized():
            raise ComputeUnavailable("the ray provider needs Ray: this process is not connected")
        missing = shortfall(placement, await asyncio.to_thread(cluster.node_shapes))
        if missing:
            raise ComputeUnavailable(
                "no node of this Ray cluster can ever host this sandbox: " + "; ".join(missing),
                details={"state": "infeasible", "missing": missing, "requested": _asked(placement)},
            )
        name = ACTOR_PREFIX + secrets.token_hex(8)
        host = SandboxHost.options(  # type: ignore[attr-defined]
            name=name,
            namespace=self.settings.ray_namespace,
            lifetime="detached",
            **placement.actor_options(),
        ).remote(self.settings)
        try:
            node_id = await self._placed(host, placement)
            inner_spec = spec.model_copy(update={"options": _inner_options(spec.options)})
            inner: SandboxRecord = await host.create.remote(inner_spec)
        except BaseException as exc:
            ray.kill(host, no_restart=True)
            if isinstance(exc, RayTaskError):
                raise _unwrap(exc) from None
            if isinstance(exc, RayActorError):
                raise ProviderError(
                    "the ray sandbox host died while starting (the server log has why)"
                ) from exc
            raise
        self._hosts[name] = host
        data = RaySandboxData(
            actor=name,
            namespace=self.settings.ray_namespace,
            node_id=node_id,
            placement=placement,
            inner=inner,
            spec=spec.model_dump(
                mode="json",
                include={"runtime", "network", "egress_allow", "resources", "options"},
            ),
        )
        return SandboxRecord(
            provider=self.name,
            sandbox_id=name,
            runtime=spec.runtime,
            isolation=inner.isolation,
            data=data.model_dump(mode="json"),
        )

    async def _placed(self, host: ActorHandle, placement: Placement) -> str:
        ready: asyncio.Future[Any] = asyncio.ensure_future(host.node_id.remote())
        done, _ = await asyncio.wait({ready}, timeout=PLACEMENT_WAIT_S)
        if not done and await asyncio.to_thread(cluster.free_now, placement):
            # Capacity is free, so its worker process is still starting (a busy node): not
            # a wait for capacity; give it a bounded while longer.
            done, _ = await asyncio.wait({ready}, timeout=STARTUP_WAIT_S)
        if done:
            return str(ready.result())
        ready.cancel()
        raise ComputeUnavailable(
            f"waiting for capacity: a node can host this sandbox but none had "
            f"{_asked(placement)} free within {PLACEMENT_WAIT_S:g} s; the request was "
            "withdrawn, retry later",
            details={
                "state": "waiting_for_capacity",
                "waited_s": PLACEMENT_WAIT_S,
                "requested": _asked(placement),
            },
        )

    # ------------------------------------------------------------------ operations

    async def run(self, record: SandboxRecord, request: ExecRequest) -> ExecResult:
        result: ExecResult = await self._call(record, "run", request)
        return result

    async def run_stream(
        self, record: SandboxRecord, request: ExecRequest
    ) -> AsyncGenerator[ExecEvent, None]:
        data = self._data(record)
        gen: Any = self._host(data).run_stream.remote(data.inner, request)
        finished = False
        try:
            async for ref in gen:
                try:
                    event: ExecEvent = await ref
                except RayTaskError as exc:
                    raise _unwrap(exc) from None
                except (ActorDiedError, ActorUnavailableError, RayActorError):
                    self._hosts.pop(data.actor, None)
                    raise _lost(data) from None
                yield event
            finished = True
        finally:
            if not finished:  # closed early: stop the run in the host (kills the process)
                with contextlib.suppress(Exception):
                    ray.cancel(gen)

    async def install_package(
        self, record: SandboxRecord, request: InstallRequest
    ) -> InstallResult:
        result: InstallResult = await self._call(record, "install_package", request)
        return result

    async def write_file(self, record: SandboxRecord, path: str, data: bytes) -> None:
        await self._call(record, "write_file", path, data)

    async def read_file(self, record: SandboxRecord, path: str) -> bytes:
        data: bytes = await self._call(record, "read_file", path)
        return data

    async def get_state(self, record: SandboxRecord) -> SandboxState:
        data = self._data(record)
        try:
            inner: SandboxState = await self._call(record, "get_state")
        except SandboxLost:
            return SandboxState(
                status="lost", provider=self.name, sandbox_id=record.sandbox_id,
                details={"actor": data.actor, "node_id": data.node_id},
            )  # fmt: skip
        return inner.model_copy(
            update={
                "provider": self.name,
                "sandbox_id": record.sandbox_id,
                "details": {**inner.details, "actor": data.actor, "node_id": data.node_id},
            }
        )

    async def set_state(self, record: SandboxRecord, state: dict[str, Any]) -> SandboxState:
        await self._call(record, "set_state", state)
        return await self.get_state(record)

    async def is_alive(self, record: SandboxRecord) -> bool:
        try:
            return bool(await self._call(record, "is_alive"))
        except SandboxLost:
            return False

    async def delete_sandbox(self, record: SandboxRecord) -> None:
        data = self._data(record)
        try:
            host = self._host(data)
        except SandboxLost:
            return  # already gone (deleted before, or died with its node)
        try:
            await host.delete.remote(data.inner)
        except RayTaskError as exc:
            raise _unwrap(exc) from None
        except RayActorError:
            pass  # died meanwhile: nothing left to release
        finally:
            self._hosts.pop(data.actor, None)
            ray.kill(host, no_restart=True)

    async def close(self) -> None:
        self._hosts.clear()  # hosts are detached and outlive this adapter instance


def _inner_options(options: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in options.items() if key != "node_labels"}


def _asked(placement: Placement) -> dict[str, Any]:
    return {"resources": placement.demand(), "node_labels": placement.labels}


def _lost(data: RaySandboxData) -> SandboxLost:
    return SandboxLost(
        f"ray sandbox {data.actor} is gone: its host actor no longer exists (its node "
        f"{data.node_id} may have left the cluster)",
        details={"sandbox_id": data.actor, "node_id": data.node_id},
    )


def _unwrap(exc: RayTaskError) -> Exception:
    cause = exc.cause
    if isinstance(cause, CerverError):
        return cause
    # The client sees the failure's type; the repr (host paths, internals) stays in the log.
    error = ProviderError(f"the ray sandbox host failed: {type(cause).__name__}")
    error.__cause__ = cause
    return error
