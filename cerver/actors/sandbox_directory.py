"""The sandbox directory: where the host actor of a `/sandbox` compute is found,
get-or-create by compute id.

The binding lives in Ray's named-actor table (name = compute id, detached), so any replica
on any node reaches the same ``SandboxActor``; each replica caches handles.
"""

from __future__ import annotations

import ray
from ray.actor import ActorHandle

from cerver.actors.calls import ActorCaller
from cerver.actors.sandbox import SandboxActor
from cerver.config import Settings


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
