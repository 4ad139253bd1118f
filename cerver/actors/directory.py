"""Where session actors are found: get-or-create by session id, call with retries while an
actor restarts, and unwrap our own errors from Ray's wrappers.

Each Serve replica keeps its own directory (handles cached per replica); the binding itself
lives in Ray's named-actor table (name = session id, detached), so any replica on any node
reaches the same actor.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

import ray
from ray.actor import ActorHandle
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayTaskError

from cerver.actors.session import SessionActor
from cerver.config import Settings
from cerver.errors import CerverError, ProviderError

_CACHE_SIZE = 4096
_UNAVAILABLE_RETRIES = 50
_RETRY_SLEEP_S = 0.1


class ComputeHostRestarted(ProviderError):
    code = "compute_host_restarted"
    status = 503


class SessionDirectory:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._handles: OrderedDict[str, ActorHandle] = OrderedDict()

    def handle(self, session_id: str) -> ActorHandle:
        handle = self._handles.get(session_id)
        if handle is not None:
            self._handles.move_to_end(session_id)
            return handle
        handle = SessionActor.options(  # type: ignore[attr-defined]
            name=session_id,
            namespace=self.settings.ray_namespace,
            lifetime="detached",
            get_if_exists=True,
        ).remote(self.settings, session_id)
        self._handles[session_id] = handle
        if len(self._handles) > _CACHE_SIZE:
            self._handles.popitem(last=False)
        return handle

    def forget(self, session_id: str) -> None:
        self._handles.pop(session_id, None)

    async def call(self, session_id: str, method: str, *args: Any) -> Any:
        for _attempt in range(_UNAVAILABLE_RETRIES):
            handle = self.handle(session_id)
            try:
                return await getattr(handle, method).remote(*args)
            except RayTaskError as exc:
                raise _unwrap(exc) from None
            except ActorUnavailableError:
                # Restarting: the call was not delivered; wait and try again.
                await asyncio.sleep(_RETRY_SLEEP_S)
            except ActorDiedError as exc:
                self.forget(session_id)
                if getattr(exc, "preempted", False) or "restart" in str(exc).lower():
                    await asyncio.sleep(_RETRY_SLEEP_S)
                    continue
                raise ComputeHostRestarted(
                    f"the process hosting session {session_id} died during this call; its "
                    "effects are unknown and nothing of it was acknowledged: run it again"
                ) from None
        raise ComputeHostRestarted(
            f"session {session_id} is still restarting; retry in a few seconds"
        )

    async def stream(self, session_id: str, method: str, *args: Any) -> AsyncIterator[Any]:
        handle = self.handle(session_id)
        gen = getattr(handle, method).remote(*args)
        finished = False
        try:
            async for ref in gen:
                try:
                    yield await ref
                except RayTaskError as exc:
                    raise _unwrap(exc) from None
            finished = True
        finally:
            if not finished:
                # The client went away (or we failed): stop the run inside the actor, which
                # kills and reaps the sandbox process.
                ray.cancel(gen)

    async def kill(self, session_id: str) -> None:
        handle = self._handles.pop(session_id, None)
        if handle is None:
            try:
                handle = ray.get_actor(session_id, namespace=self.settings.ray_namespace)
            except ValueError:
                return
        ray.kill(handle, no_restart=True)


def _unwrap(exc: RayTaskError) -> Exception:
    cause = exc.cause
    if isinstance(cause, CerverError):
        return cause
    return exc
