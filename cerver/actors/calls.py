"""Calling the actor that owns an entity (a session, a sandbox) from a Serve replica, with
the retries every caller needs: wait while the actor restarts, look it up again when it
moved, and unwrap our own errors from Ray's wrappers. Subclasses say how an entity's actor
is found (``_resolve``) and what arguments its methods take first (``_lead``), and give
their callers typed methods; a method of the actor is named by a selector such as
``lambda host: host.run``, never by a string."""

from __future__ import annotations

import abc
import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, Callable
from typing import Any

import ray
from ray.actor import ActorHandle
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayTaskError

from cerver.errors import CerverError, ProviderError

_CACHE_SIZE = 4096
_MAX_ATTEMPTS = 100
_RETRY_SLEEP_S = 0.05

# Picks the actor method to call from a handle: ``lambda host: host.run``.
Method = Callable[[ActorHandle], Any]


class ComputeHostRestarted(ProviderError):
    code = "compute_host_restarted"
    status = 503


class Moved(CerverError):
    """Raised by an actor that no longer serves the entity: look it up again."""

    status, code = 503, "session_moved"


def unwrap(exc: RayTaskError) -> Exception:
    cause = exc.cause
    return cause if isinstance(cause, CerverError) else exc


class ActorCaller(abc.ABC):
    def __init__(self) -> None:
        self._handles: OrderedDict[str, ActorHandle] = OrderedDict()

    @abc.abstractmethod
    async def _resolve(self, entity_id: str, owner: str) -> ActorHandle:
        """The entity's actor (found or made) for an uncached entity."""

    def _lead(self, entity_id: str) -> tuple[Any, ...]:
        """Arguments every actor method takes before its own."""
        return ()

    async def _gone(self, entity_id: str) -> None:  # noqa: B027 (optional hook)
        """The entity's actor is dead for good: forget it wherever it is remembered."""

    async def handle(self, entity_id: str, owner: str) -> ActorHandle:
        handle = self._handles.get(entity_id)
        if handle is not None:
            self._handles.move_to_end(entity_id)
            return handle
        handle = await self._resolve(entity_id, owner)
        self._handles[entity_id] = handle
        if len(self._handles) > _CACHE_SIZE:
            self._handles.popitem(last=False)
        return handle

    def forget(self, entity_id: str) -> None:
        self._handles.pop(entity_id, None)

    async def _call(
        self,
        entity_id: str,
        owner: str,
        method: Method,
        *args: Any,
        spans: dict[str, float] | None = None,
    ) -> Any:
        """``spans``, if given, gets ``route``: the milliseconds spent finding the actor."""
        retried_dead = False
        for _attempt in range(_MAX_ATTEMPTS):
            was_cached = entity_id in self._handles
            found_at = time.perf_counter()
            handle = await self.handle(entity_id, owner)
            if spans is not None:
                route_ms = (time.perf_counter() - found_at) * 1000.0
                spans["route"] = spans.get("route", 0.0) + route_ms
            ref = method(handle).remote(*self._lead(entity_id), *args)
            try:
                return await ref
            except asyncio.CancelledError:
                # The caller was cancelled (its client hung up): cancel the actor's call
                # too. Serve's proxy cancels the replica's task and Ray takes the calls it
                # made with it; behind HAProxy only our coroutine is cancelled, and
                # awaiting a ref does not cancel the task it names.
                ray.cancel(ref)
                raise
            except RayTaskError as exc:
                cause = unwrap(exc)
                if isinstance(cause, Moved):
                    self.forget(entity_id)  # hibernated or moved: look it up again
                    continue
                raise cause from None
            except ActorUnavailableError:
                await asyncio.sleep(_RETRY_SLEEP_S)  # restarting: not delivered, try again
            except ActorDiedError:
                self.forget(entity_id)
                await self._gone(entity_id)
                if was_cached and not retried_dead:
                    # A handle cached from before the actor was stopped on purpose (closed,
                    # adopted, reaped): resolve a fresh one once.
                    retried_dead = True
                    continue
                raise ComputeHostRestarted(
                    f"the process hosting {entity_id} died during this call; its effects are "
                    "unknown and nothing of it was acknowledged: run it again"
                ) from None
        raise ComputeHostRestarted(f"{entity_id} is still restarting; retry in a few seconds")

    async def _stream(
        self, entity_id: str, owner: str, method: Method, *args: Any
    ) -> AsyncGenerator[Any, None]:
        handle = await self.handle(entity_id, owner)
        gen = method(handle).remote(*self._lead(entity_id), *args)
        finished = False
        try:
            async for ref in gen:
                try:
                    yield await ref
                except RayTaskError as exc:
                    cause = unwrap(exc)
                    if isinstance(cause, Moved):
                        self.forget(entity_id)
                    raise cause from None
            finished = True
        finally:
            if not finished:
                # The client went away (or we failed): stop the run inside the actor, which
                # kills and reaps the sandbox process.
                ray.cancel(gen)
