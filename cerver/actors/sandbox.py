"""SandboxActor: the host of a compute made through the lower-level `/sandbox` API.

It owns the compute's adapter instance (and so, for `local`, its persistent interpreter)
until the compute is deleted, reaped after `idle_s` without use (clients such as the
published SDK never delete), or adopted by a session, whose actor then hosts it.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import ray

from cerver.actors.provisioning import Provisioner, record_of
from cerver.adapters.base import (
    ComputeAdapter,
    ExecEvent,
    ExecRequest,
    ExecResult,
    InstallRequest,
    InstallResult,
    SandboxRecord,
    SandboxState,
)
from cerver.config import Settings
from cerver.errors import Conflict, NotFound
from cerver.models import ComputeChoice
from cerver.store import Store


class SandboxCore:
    def __init__(self, settings: Settings, compute_id: str) -> None:
        self.settings = settings
        self.compute_id = compute_id
        self.store = Store.open(settings.database_url)
        self.provisioner = Provisioner(settings, self.store)
        self.last_used = time.monotonic()

    async def create(self, account_id: str, choice: ComputeChoice, runtime: str) -> None:
        await self.provisioner.create(
            account_id, choice, runtime=runtime, session_id=None, compute_id=self.compute_id
        )

    async def sandbox(self) -> tuple[ComputeAdapter, SandboxRecord]:
        """The adapter handle (with the owner's current credentials) and the sandbox."""
        self.last_used = time.monotonic()
        row = await asyncio.to_thread(self.store.computes.get, self.compute_id)
        if row is None or row.status == "released" or row.record is None:
            raise NotFound(f"sandbox {self.compute_id} not found (deleted or never made)")
        if row.session_id is not None:
            raise Conflict(
                f"sandbox {self.compute_id} is attached to session {row.session_id}; use "
                f"/v2/sessions/{row.session_id}/run"
            )
        adapter = await self.provisioner.adapter(row.provider, row.account_id)
        return adapter, record_of(self.settings, row.record)

    async def delete(self) -> None:
        """Release the compute, unless a session has adopted it: the session's host owns it
        then, and neither DELETE /sandbox nor this actor's idle reaper may take it away."""
        row = await asyncio.to_thread(self.store.computes.get, self.compute_id)
        if row is None or row.status == "released" or row.session_id is not None:
            return
        if row.record is not None:
            await self.provisioner.release(
                self.compute_id, record_of(self.settings, row.record), row.account_id
            )
        await self.provisioner.close()


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)
class SandboxActor:
    """Each method is one operation of the adapter contract on this actor's sandbox."""

    def __init__(self, settings: Settings, compute_id: str) -> None:
        self.core = SandboxCore(settings, compute_id)
        self._reaper = asyncio.get_event_loop().create_task(self._reap(settings.sandbox_idle_s))

    async def _reap(self, idle_s: float) -> None:
        while True:
            await asyncio.sleep(min(idle_s, 30.0))
            if time.monotonic() - self.core.last_used > idle_s:
                await self.core.delete()
                ray.actor.exit_actor()

    async def create(self, account_id: str, choice: ComputeChoice, runtime: str) -> None:
        await self.core.create(account_id, choice, runtime)

    async def run(self, request: ExecRequest) -> ExecResult:
        adapter, record = await self.core.sandbox()
        return await adapter.run(record, request)

    async def run_stream(self, request: ExecRequest) -> AsyncIterator[ExecEvent]:
        adapter, record = await self.core.sandbox()
        async for event in adapter.run_stream(record, request):
            yield event

    async def install(self, request: InstallRequest) -> InstallResult:
        adapter, record = await self.core.sandbox()
        return await adapter.install_package(record, request)

    async def write_file(self, path: str, data: bytes) -> None:
        adapter, record = await self.core.sandbox()
        await adapter.write_file(record, path, data)

    async def read_file(self, path: str) -> bytes:
        adapter, record = await self.core.sandbox()
        return await adapter.read_file(record, path)

    async def get_state(self) -> SandboxState:
        adapter, record = await self.core.sandbox()
        return await adapter.get_state(record)

    async def set_state(self, state: dict[str, Any]) -> SandboxState:
        adapter, record = await self.core.sandbox()
        return await adapter.set_state(record, state)

    async def delete(self) -> None:
        await self.core.delete()

    async def pid(self) -> int:
        return os.getpid()
