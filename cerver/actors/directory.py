"""Where entity actors (sessions, sandboxes) are found: get-or-create by id, call with
retries while an actor restarts, and unwrap our own errors from Ray's wrappers.

Each Serve replica keeps its own directories (handles cached per replica); the binding
itself lives in Ray's named-actor table (name = entity id, detached), so any replica on any
node reaches the same actor.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncGenerator
from typing import Any

import ray
from ray.actor import ActorHandle
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayTaskError

from cerver.config import Settings
from cerver.errors import CerverError, ProviderError

_CACHE_SIZE = 4096
_UNAVAILABLE_RETRIES = 50
_RETRY_SLEEP_S = 0.1


class ComputeHostRestarted(ProviderError):
    code = "compute_host_restarted"
    status = 503


class ActorDirectory:
    """Get-or-create directory of one actor class, keyed by entity id."""

    def __init__(self, actor_cls: Any, settings: Settings) -> None:
        self.actor_cls = actor_cls
        self.settings = settings
        self._handles: OrderedDict[str, ActorHandle] = OrderedDict()

    def handle(self, entity_id: str) -> ActorHandle:
        handle = self._handles.get(entity_id)
        if handle is not None:
            self._handles.move_to_end(entity_id)
            return handle
        handle = self.actor_cls.options(
            name=entity_id,
            namespace=self.settings.ray_namespace,
            lifetime="detached",
            get_if_exists=True,
        ).remote(self.settings, entity_id)
        self._handles[entity_id] = handle
        if len(self._handles) > _CACHE_SIZE:
            self._handles.popitem(last=False)
        return handle

    def forget(self, entity_id: str) -> None:
        self._handles.pop(entity_id, None)

    async def call(self, entity_id: str, method: str, *args: Any) -> Any:
        retried_dead = False
        for _attempt in range(_UNAVAILABLE_RETRIES):
            was_cached = entity_id in self._handles
            handle = self.handle(entity_id)
            try:
                return await getattr(handle, method).remote(*args)
            except RayTaskError as exc:
                raise unwrap(exc) from None
            except ActorUnavailableError:
                # Restarting: the call was not delivered; wait and try again.
                await asyncio.sleep(_RETRY_SLEEP_S)
            except ActorDiedError:
                self.forget(entity_id)
                if was_cached and not retried_dead:
                    # A handle cached from before the actor was stopped on purpose (closed,
                    # adopted, reaped): get-or-create a fresh host once.
                    retried_dead = True
                    continue
                raise ComputeHostRestarted(
                    f"the process hosting {entity_id} died during this call; its effects "
                    "are unknown and nothing of it was acknowledged: run it again"
                ) from None
        raise ComputeHostRestarted(f"{entity_id} is still restarting; retry in a few seconds")

    async def stream(self, entity_id: str, method: str, *args: Any) -> AsyncGenerator[Any, None]:
        handle = self.handle(entity_id)
        gen = getattr(handle, method).remote(*args)
        finished = False
        try:
            async for ref in gen:
                try:
                    yield await ref
                except RayTaskError as exc:
                    raise unwrap(exc) from None
            finished = True
        finally:
            if not finished:
                # The client went away (or we failed): stop the run inside the actor, which
                # kills and reaps the sandbox process.
                ray.cancel(gen)

    async def kill(self, entity_id: str) -> None:
        handle = self._handles.pop(entity_id, None)
        if handle is None:
            try:
                handle = ray.get_actor(entity_id, namespace=self.settings.ray_namespace)
            except ValueError:
                return
        ray.kill(handle, no_restart=True)


def unwrap(exc: RayTaskError) -> Exception:
    cause = exc.cause
    if isinstance(cause, CerverError):
        return cause
    return exc
