"""The session directory: which host actor serves which session, and the warm pool of
ready hosts.

A session is *bound* to a host (a ``SessionHost`` actor) while it is live. Creating or
waking a session takes a ready host from the pool (no process start on the request path)
and binds it; a host whose session went idle hibernates: it releases its processes, unbinds
and returns to the pool (or exits when the pool is full). The directory is one detached,
named actor (``cerver-session-directory``) so every Serve replica on every node sees the
same bindings; it also enforces the live-session limits (backpressure).

Known limit: the directory's state is in memory. If its process dies, it restarts empty;
bound hosts then finish their current work and hibernate on their idle timer, and the next
call to their sessions binds a fresh host (nothing acknowledged is lost: the store has it).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

import ray
from ray.actor import ActorHandle

from cerver.config import Settings
from cerver.errors import RateLimited
from cerver.store.ids import new_id

DIRECTORY_NAME = "cerver-session-directory"


@dataclass
class Binding:
    handle: ActorHandle
    actor_id: str
    account_id: str
    bound_at: float


class Overloaded(RateLimited):
    code = "overloaded"


@ray.remote(num_cpus=0, max_restarts=-1)
class SessionDirectory:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.bound: dict[str, Binding] = {}
        self.by_actor: dict[str, str] = {}
        self.free: deque[tuple[ActorHandle, str]] = deque()
        self.pending: dict[str, asyncio.Future[ActorHandle]] = {}
        self.creating = 0
        self.created_total = 0
        self._refill_task: asyncio.Task[None] | None = None

    # --- pool --------------------------------------------------------------------------
    async def _new_host(self) -> tuple[ActorHandle, str]:
        from cerver.actors.session import SessionHost

        handle = SessionHost.options(  # type: ignore[attr-defined]
            name=new_id("host"),
            namespace=self.settings.ray_namespace,
            lifetime="detached",
        ).remote(self.settings)
        actor_id: str = await handle.ready.remote()
        self.created_total += 1
        return handle, actor_id

    def _kick_refill(self) -> None:
        if self._refill_task is None or self._refill_task.done():
            self._refill_task = asyncio.get_running_loop().create_task(self._refill())

    async def _refill(self) -> None:
        while len(self.free) + self.creating < self.settings.session_pool_size:
            self.creating += 1
            try:
                self.free.append(await self._new_host())
            finally:
                self.creating -= 1

    async def warm(self) -> int:
        """Fill the pool now (start-up), and report its size."""
        await self._refill()
        return len(self.free)

    # --- binding -----------------------------------------------------------------------
    async def lookup(self, session_id: str) -> ActorHandle | None:
        found = self.bound.get(session_id)
        return found.handle if found is not None else None

    def _check_limits(self, account_id: str) -> None:
        live = len(self.bound) + len(self.pending)
        per_account = sum(1 for b in self.bound.values() if b.account_id == account_id)
        retry = max(1.0, min(self.settings.hibernate_after_s, 30.0))
        if live >= self.settings.max_live_sessions:
            raise Overloaded(
                f"this server holds its maximum of {self.settings.max_live_sessions} live "
                "sessions; retry shortly (idle sessions hibernate and free room)",
                retry_after_s=retry,
                details={"limit": "max_live_sessions", "value": self.settings.max_live_sessions},
            )
        if per_account >= self.settings.max_live_sessions_per_account:
            raise Overloaded(
                f"this account has its maximum of {self.settings.max_live_sessions_per_account} "
                "live sessions; close or let some go idle, then retry",
                retry_after_s=retry,
                details={
                    "limit": "max_live_sessions_per_account",
                    "value": self.settings.max_live_sessions_per_account,
                },
            )

    async def acquire(self, session_id: str, account_id: str) -> ActorHandle:
        """The host bound to ``session_id``, binding a pooled one if there is none."""
        found = self.bound.get(session_id)
        if found is not None:
            return found.handle
        waiting = self.pending.get(session_id)
        if waiting is not None:
            return await asyncio.shield(waiting)
        self._check_limits(account_id)
        future: asyncio.Future[ActorHandle] = asyncio.get_running_loop().create_future()
        self.pending[session_id] = future
        try:
            handle, actor_id = self.free.popleft() if self.free else await self._new_host()
            self._kick_refill()
            await handle.bind.remote(session_id)
            self.bound[session_id] = Binding(handle, actor_id, account_id, time.time())
            self.by_actor[actor_id] = session_id
            future.set_result(handle)
            return handle
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning
            raise
        finally:
            del self.pending[session_id]

    async def release(self, session_id: str, actor_id: str, handle: ActorHandle) -> bool:
        """Unbind a host from its session and take it back into the pool. False: the pool is
        full and the host should exit."""
        found = self.bound.get(session_id)
        if found is not None and found.actor_id == actor_id:
            del self.bound[session_id]
        self.by_actor.pop(actor_id, None)
        if len(self.free) >= max(self.settings.session_pool_size, 1) * 2:
            return False
        self.free.append((handle, actor_id))
        return True

    async def drop(self, session_id: str) -> None:
        """Forget a binding whose host is gone for good; the next call binds a new host."""
        found = self.bound.pop(session_id, None)
        if found is not None:
            self.by_actor.pop(found.actor_id, None)

    async def forget_host(self, actor_id: str) -> None:
        """A host died for good (its node went away): drop its binding and pool slot."""
        session_id = self.by_actor.pop(actor_id, None)
        found = self.bound.get(session_id) if session_id is not None else None
        if session_id is not None and found is not None and found.actor_id == actor_id:
            del self.bound[session_id]
        self.free = deque((h, a) for h, a in self.free if a != actor_id)

    async def who_am_i(self, actor_id: str) -> str | None:
        return self.by_actor.get(actor_id)

    async def stats(self) -> dict[str, Any]:
        per_account = Counter(b.account_id for b in self.bound.values())
        return {
            "live": len(self.bound),
            "free": len(self.free),
            "creating": self.creating,
            "created_total": self.created_total,
            "per_account": dict(per_account),
        }


def directory_handle(settings: Settings) -> ActorHandle:
    return SessionDirectory.options(  # type: ignore[attr-defined]
        name=DIRECTORY_NAME,
        namespace=settings.ray_namespace,
        lifetime="detached",
        get_if_exists=True,
    ).remote(settings)
