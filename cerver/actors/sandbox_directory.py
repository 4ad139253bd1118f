"""The sandbox directory: where the host actor of a `/sandbox` compute is found,
get-or-create by compute id.

The binding lives in Ray's named-actor table (name = compute id, detached), so any replica
on any node reaches the same ``SandboxActor``; each replica caches handles.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any, cast

import ray
from ray.actor import ActorHandle

from cerver.actors.calls import ActorCaller
from cerver.actors.sandbox import SandboxActor
from cerver.adapters.base import (
    ExecEvent,
    ExecRequest,
    ExecResult,
    InstallRequest,
    InstallResult,
    SandboxState,
)
from cerver.config import Settings
from cerver.models import ComputeChoice


class SandboxDirectory(ActorCaller):
    """Get-or-create directory of ``SandboxActor``s, keyed by compute id (the actor's name)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.settings = settings

    async def _resolve(self, entity_id: str, owner: str) -> ActorHandle:
        handle: ActorHandle = SandboxActor.options(  # type: ignore[attr-defined]
            name=entity_id,
            namespace=self.settings.ray_namespace,
            lifetime="detached",
            get_if_exists=True,
        ).remote(self.settings, entity_id)
        return handle

    async def kill(self, entity_id: str) -> None:
        handle = self._handles.pop(entity_id, None)
        if handle is None:
            try:
                handle = ray.get_actor(entity_id, namespace=self.settings.ray_namespace)
            except ValueError:
                return
        ray.kill(handle, no_restart=True)

    # --- the sandbox actor's operations (``SandboxActor`` in actors/sandbox.py) ------------
    async def create(
        self, compute_id: str, account_id: str, choice: ComputeChoice, runtime: str
    ) -> None:
        await self._call(compute_id, account_id, lambda a: a.create, account_id, choice, runtime)

    async def run(self, compute_id: str, owner: str, request: ExecRequest) -> ExecResult:
        return cast(ExecResult, await self._call(compute_id, owner, lambda a: a.run, request))

    def run_stream(
        self, compute_id: str, owner: str, request: ExecRequest
    ) -> AsyncGenerator[ExecEvent, None]:
        return self._stream(compute_id, owner, lambda a: a.run_stream, request)

    async def install(self, compute_id: str, owner: str, request: InstallRequest) -> InstallResult:
        found = await self._call(compute_id, owner, lambda a: a.install, request)
        return cast(InstallResult, found)

    async def write_file(self, compute_id: str, owner: str, path: str, data: bytes) -> None:
        await self._call(compute_id, owner, lambda a: a.write_file, path, data)

    async def read_file(self, compute_id: str, owner: str, path: str) -> bytes:
        return cast(bytes, await self._call(compute_id, owner, lambda a: a.read_file, path))

    async def get_state(self, compute_id: str, owner: str) -> SandboxState:
        return cast(SandboxState, await self._call(compute_id, owner, lambda a: a.get_state))

    async def set_state(self, compute_id: str, owner: str, state: dict[str, Any]) -> SandboxState:
        found = await self._call(compute_id, owner, lambda a: a.set_state, state)
        return cast(SandboxState, found)

    async def delete(self, compute_id: str, owner: str) -> None:
        await self._call(compute_id, owner, lambda a: a.delete)
