"""Where `/sandbox` computes' host actors are found: get-or-create by compute id.

The binding lives in Ray's named-actor table (name = compute id, detached), so any replica
on any node reaches the same actor; each replica caches handles.
"""

from __future__ import annotations

from typing import Any

import ray
from ray.actor import ActorHandle

from cerver.actors.calls import ActorCaller
from cerver.config import Settings


class ActorDirectory(ActorCaller):
    """Get-or-create directory of one actor class, keyed by entity id (the actor's name)."""

    def __init__(self, actor_cls: Any, settings: Settings) -> None:
        super().__init__()
        self.actor_cls = actor_cls
        self.settings = settings

    async def _resolve(self, entity_id: str, owner: str) -> ActorHandle:
        handle: ActorHandle = self.actor_cls.options(
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
