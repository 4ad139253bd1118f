"""``SandboxHost``: the Ray actor that hosts one ``ray`` sandbox on the node Ray placed it.

It runs the very same sandbox code as the ``local`` provider (a ``LocalAdapter`` instance in
this process), so isolation, runtimes, files and the persistent Python interpreter behave
identically. The actor is detached (it outlives the session actor that made it, which may
restart elsewhere) and is never restarted: its workspace lived on its node, so a host that
died with its node is a lost sandbox, not one to resurrect empty.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import ray

from cerver.adapters.base import ExecEvent, ExecRequest, SandboxRecord, SandboxSpec
from cerver.config import Settings, prepare_home

# The contract operations a host delegates to its local adapter, record first.
DELEGATED = frozenset(
    {"run", "install_package", "write_file", "read_file", "get_state", "set_state", "is_alive"}
)


@ray.remote(num_cpus=0, max_restarts=0, max_task_retries=0)
class SandboxHost:
    def __init__(self, settings: Settings) -> None:
        from cerver.adapters.local import LocalAdapter

        prepare_home(settings)  # this node may never have hosted Cerver before
        self.local = LocalAdapter(settings)

    def node_id(self) -> str:
        return str(ray.get_runtime_context().get_node_id())

    async def create(self, spec: SandboxSpec) -> SandboxRecord:
        return await self.local.create_sandbox(spec)

    async def call(self, op: str, record: SandboxRecord, *args: Any) -> Any:
        if op not in DELEGATED:
            raise ValueError(f"not a delegated sandbox operation: {op}")
        return await getattr(self.local, op)(record, *args)

    async def run_stream(
        self, record: SandboxRecord, request: ExecRequest
    ) -> AsyncIterator[ExecEvent]:
        # Cancelling this task (the caller closed its stream) closes the inner generator,
        # which kills and reaps the sandbox process.
        async for event in self.local.run_stream(record, request):
            yield event

    async def delete(self, record: SandboxRecord) -> None:
        await self.local.delete_sandbox(record)
        await self.local.close()
