"""How a Serve replica reaches the host of a session: ask the session directory (cached
per replica) and call; hosts that hibernated, restarted or died are coped with by
``ActorCaller``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from typing import Any, cast

from ray.actor import ActorHandle
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayTaskError

from cerver.actors.calls import ActorCaller, ComputeHostRestarted, unwrap
from cerver.actors.messages import Attached, SessionRun, SessionStreamItem
from cerver.actors.session_directory import Overloaded, directory_handle
from cerver.adapters.base import ExecRequest
from cerver.config import Settings
from cerver.models import ComputeChoice

_DIRECTORY_RESTART_WAIT_S = 60.0


class SessionRouter(ActorCaller):
    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.settings = settings
        self.directory = directory_handle(settings)

    def _lead(self, entity_id: str) -> tuple[Any, ...]:
        return (entity_id,)  # a host serves many sessions: every method names one

    async def _gone(self, entity_id: str) -> None:
        await self.directory.drop.remote(entity_id)

    async def _resolve(self, entity_id: str, owner: str) -> ActorHandle:
        overload_deadline = time.monotonic() + self.settings.overload_wait_s
        restart_deadline = time.monotonic() + _DIRECTORY_RESTART_WAIT_S
        while True:
            try:
                handle: ActorHandle = await self.directory.acquire.remote(entity_id, owner)
                return handle
            except RayTaskError as exc:
                cause = unwrap(exc)
                if isinstance(cause, Overloaded) and time.monotonic() < overload_deadline:
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

    async def abandon(self, session_id: str) -> None:
        """Unbind a session whose create was undone (if a host was bound at all)."""
        handle = self._handles.pop(session_id, None)
        if handle is not None:
            await handle.abandon.remote(session_id)

    # --- the session host's operations (``SessionHost`` in actors/session.py) --------------
    async def attach(
        self, session_id: str, owner: str, choice: ComputeChoice | None, reason: str,
        *, spans: dict[str, float] | None = None,
    ) -> Attached:  # fmt: skip
        found = await self._call(
            session_id, owner, lambda host: host.attach, choice, reason, spans=spans
        )
        return cast(Attached, found)

    async def run(
        self,
        session_id: str,
        owner: str,
        request: ExecRequest,
        received_at: float,
        *,
        spans: dict[str, float] | None = None,
    ) -> SessionRun:
        found = await self._call(
            session_id, owner, lambda host: host.run, request, received_at, spans=spans
        )
        return cast(SessionRun, found)

    def run_stream(
        self, session_id: str, owner: str, request: ExecRequest, received_at: float
    ) -> AsyncGenerator[SessionStreamItem, None]:
        return self._stream(session_id, owner, lambda host: host.run_stream, request, received_at)

    async def close(self, session_id: str, owner: str) -> None:
        await self._call(session_id, owner, lambda host: host.close)
