"""How a Serve replica reaches the host of a session: ask the directory (cached per
replica), call, and cope with hosts that moved (hibernated, restarted, died)."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator
from typing import Any

import ray
from ray.actor import ActorHandle
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayTaskError

from cerver.actors.directory import ComputeHostRestarted, unwrap
from cerver.actors.hosts import Overloaded, directory_handle
from cerver.actors.session import NotBound
from cerver.config import Settings

_CACHE_SIZE = 4096
_RETRY_SLEEP_S = 0.05
_MAX_ATTEMPTS = 100
_DIRECTORY_RESTART_WAIT_S = 60.0


class SessionRouter:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.directory = directory_handle(settings)
        self._hosts: OrderedDict[str, ActorHandle] = OrderedDict()

    async def host(self, session_id: str, account_id: str) -> ActorHandle:
        handle = self._hosts.get(session_id)
        if handle is not None:
            self._hosts.move_to_end(session_id)
            return handle
        deadline = time.monotonic() + self.settings.overload_wait_s
        restart_deadline = time.monotonic() + _DIRECTORY_RESTART_WAIT_S
        while True:
            try:
                handle = await self.directory.acquire.remote(session_id, account_id)
                break
            except RayTaskError as exc:
                cause = unwrap(exc)
                if isinstance(cause, Overloaded) and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)  # backpressure: wait briefly for room
                    continue
                raise cause from None
            except (ActorUnavailableError, ActorDiedError):
                # The directory is restarting (e.g. its node went away): it comes back empty
                # and rebinds sessions from the store on demand.
                if time.monotonic() > restart_deadline:
                    raise ComputeHostRestarted(
                        "the session directory is restarting; retry in a few seconds"
                    ) from None
                self.directory = directory_handle(self.settings)
                await asyncio.sleep(0.2)
        self._hosts[session_id] = handle
        if len(self._hosts) > _CACHE_SIZE:
            self._hosts.popitem(last=False)
        return handle

    def forget(self, session_id: str) -> None:
        self._hosts.pop(session_id, None)

    async def abandon(self, session_id: str) -> None:
        """Unbind a session whose create was undone (if a host was bound at all)."""
        handle = self._hosts.pop(session_id, None)
        if handle is not None:
            await handle.abandon.remote(session_id)

    async def call(self, session_id: str, account_id: str, method: str, *args: Any) -> Any:
        retried_dead = False
        for _attempt in range(_MAX_ATTEMPTS):
            was_cached = session_id in self._hosts
            handle = await self.host(session_id, account_id)
            try:
                return await getattr(handle, method).remote(session_id, *args)
            except RayTaskError as exc:
                cause = unwrap(exc)
                if isinstance(cause, NotBound):
                    self.forget(session_id)  # hibernated or moved: look it up again
                    continue
                raise cause from None
            except ActorUnavailableError:
                await asyncio.sleep(_RETRY_SLEEP_S)  # restarting: not delivered, try again
            except ActorDiedError:
                self.forget(session_id)
                await self.directory.drop.remote(session_id)
                if was_cached and not retried_dead:
                    retried_dead = True
                    continue
                raise ComputeHostRestarted(
                    f"the process hosting {session_id} died during this call; its effects are "
                    "unknown and nothing of it was acknowledged: run it again"
                ) from None
        raise ComputeHostRestarted(f"{session_id} is still restarting; retry in a few seconds")

    async def stream(
        self, session_id: str, account_id: str, method: str, *args: Any
    ) -> AsyncGenerator[Any, None]:
        handle = await self.host(session_id, account_id)
        gen = getattr(handle, method).remote(session_id, *args)
        finished = False
        try:
            async for ref in gen:
                try:
                    yield await ref
                except RayTaskError as exc:
                    cause = unwrap(exc)
                    if isinstance(cause, NotBound):
                        self.forget(session_id)
                    raise cause from None
            finished = True
        finally:
            if not finished:
                ray.cancel(gen)  # the client went away: stop (and reap) the run in the host
