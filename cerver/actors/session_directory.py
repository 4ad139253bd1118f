"""The session directory: which host actor serves which session, and the warm pool of
ready hosts.

A live session is *bound* to a host (a ``SessionHost`` actor, which serves up to
``sessions_per_host`` sessions at once). Creating or waking a session binds it to a host
that has room, packing sessions onto busy hosts first so that ``session_pool_size`` empty
hosts stay ready for bursts (no process start on the request path); the pool refills in the
background once binds pause (``REFILL_QUIET_S``: a refill's process start would take CPU from
the burst), and grows to the recent demand (binds in the last ``DEMAND_WINDOW_S`` over
``sessions_per_host``, up to ``session_pool_max``). A burst larger than the free room starts
the hosts it needs at once, one per ``sessions_per_host`` waiting sessions. A session that
goes idle hibernates: its host unbinds it, and a host left empty beyond the pool's size
exits. The directory is one detached, named actor
(``cerver-session-directory``) so every Serve replica on every node sees the same bindings;
it also enforces the live-session limits (backpressure).

Known limit: the directory's state is in memory. If its process dies, it restarts empty;
hosts then finish their current work and hibernate on their idle timers, and the next call
to a session binds it again (nothing acknowledged is lost: the store has it).
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, cast

import ray
from ray.actor import ActorHandle

from cerver.actors.session import SessionHost
from cerver.config import Settings
from cerver.errors import RateLimited
from cerver.store.ids import new_id

DIRECTORY_NAME = "cerver-session-directory"
DEMAND_WINDOW_S = 60.0
REFILL_QUIET_S = 0.5
# Growth beyond the configured pool (to the recent demand) waits for a longer lull: a
# burst's first commands come after its binds, and each host start is a Ray worker start
# (~1 CPU-second) they would share the CPUs with (issue 16, burst: measured).
GROW_QUIET_S = 5.0


@dataclass
class Host:
    handle: ActorHandle
    actor_id: str
    sessions: set[str] = field(default_factory=set)


@dataclass
class Binding:
    actor_id: str
    account_id: str


class Overloaded(RateLimited):
    code = "overloaded"


@ray.remote(num_cpus=0, max_restarts=-1)
class SessionDirectory:
    """Binds live sessions to pooled ``SessionHost`` actors (see the module docstring).

    Each host it starts is given this directory's handle, so ``session.py`` never
    imports this module (no import cycle)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.hosts: dict[str, Host] = {}
        self.bound: dict[str, Binding] = {}
        self.pending: dict[str, asyncio.Future[ActorHandle]] = {}
        self.creating = 0
        self.created_total = 0
        self._refill_task: asyncio.Task[None] | None = None
        self._growing: set[asyncio.Future[Host]] = set()
        self._waiting = 0  # sessions waiting for a host with room
        self._bound_at: deque[float] = deque()  # when sessions were bound (recent demand)

    # --- pool --------------------------------------------------------------------------
    def _empty(self) -> int:
        return sum(1 for h in self.hosts.values() if not h.sessions)

    async def _new_host(self) -> Host:
        self.creating += 1
        try:
            placement = (
                {"label_selector": self.settings.session_host_labels}
                if self.settings.session_host_labels
                else {}
            )
            handle = SessionHost.options(  # type: ignore[attr-defined]
                name=new_id("host"),
                namespace=self.settings.ray_namespace,
                lifetime="detached",
                **placement,
            ).remote(self.settings, ray.get_runtime_context().current_actor)
            actor_id: str = await handle.ready.remote()
        finally:
            self.creating -= 1
        host = Host(handle, actor_id)
        self.hosts[actor_id] = host
        self.created_total += 1
        return host

    def _kick_refill(self) -> None:
        if self._refill_task is None or self._refill_task.done():
            self._refill_task = asyncio.get_running_loop().create_task(self._refill())

    def _pool_target(self) -> int:
        """Empty hosts to keep: the configured size, or the recent demand when more."""
        base = self.settings.session_pool_size
        if base == 0:
            return 0
        horizon = asyncio.get_running_loop().time() - DEMAND_WINDOW_S
        while self._bound_at and self._bound_at[0] < horizon:
            self._bound_at.popleft()
        demand = math.ceil(len(self._bound_at) / self.settings.sessions_per_host)
        return max(base, min(self.settings.session_pool_max, demand))

    async def _refill(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            have = self._empty() + self.creating
            target = self._pool_target()
            if have >= target:
                return
            base = self.settings.session_pool_size
            grow = have >= base
            last = self._bound_at[-1] if self._bound_at else 0.0
            quiet = last + (GROW_QUIET_S if grow else REFILL_QUIET_S) - loop.time()
            if quiet > 0:
                await asyncio.sleep(quiet)
                continue
            missing = target - have if grow else base - have
            await asyncio.gather(*(self._new_host() for _ in range(missing)))

    async def warm(self) -> int:
        """Fill the pool now (start-up), and report how many empty hosts are ready."""
        await self._refill()
        return self._empty()

    def _place(self) -> Host | None:
        """The fullest host that still has room (bin packing keeps empty hosts spare)."""
        room = [h for h in self.hosts.values() if len(h.sessions) < self.settings.sessions_per_host]
        return max(room, key=lambda h: len(h.sessions), default=None)

    async def _host_with_room(self) -> Host:
        """A host with a free slot; when every host is full, new hosts for all who wait.

        A burst larger than the pool must not start a process per waiting session: waiters
        share the hosts being started (one per ``sessions_per_host`` of them, started at
        once) and take their slots."""
        self._waiting += 1
        try:
            while True:
                host = self._place()
                if host is not None:
                    return host
                growing = self._grow()
                done, _ = await asyncio.wait(growing, return_when=asyncio.FIRST_COMPLETED)
                for started in done:
                    if started.exception() is not None:
                        raise started.exception()  # type: ignore[misc]
        finally:
            self._waiting -= 1

    def _grow(self) -> set[asyncio.Future[Host]]:
        self._growing = {f for f in self._growing if not f.done()}
        needed = math.ceil(self._waiting / self.settings.sessions_per_host)
        while len(self._growing) < needed:
            self._growing.add(asyncio.ensure_future(self._new_host()))
        return set(self._growing)

    # --- binding -----------------------------------------------------------------------
    async def lookup(self, session_id: str) -> ActorHandle | None:
        found = self.bound.get(session_id)
        return self.hosts[found.actor_id].handle if found is not None else None

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
        """The host bound to ``session_id``, binding it to a host with room if unbound."""
        found = await self.lookup(session_id)
        if found is not None:
            return found
        waiting = self.pending.get(session_id)
        if waiting is not None:
            return await asyncio.shield(waiting)
        self._check_limits(account_id)
        future: asyncio.Future[ActorHandle] = asyncio.get_running_loop().create_future()
        self.pending[session_id] = future
        try:
            host = await self._host_with_room()
            host.sessions.add(session_id)  # reserve the slot before awaiting again
            try:
                await host.handle.bind.remote(session_id)
            except BaseException:
                host.sessions.discard(session_id)
                raise
            self.bound[session_id] = Binding(host.actor_id, account_id)
            self._bound_at.append(asyncio.get_running_loop().time())
            self._kick_refill()
            future.set_result(host.handle)
            return host.handle
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning
            raise
        finally:
            del self.pending[session_id]

    async def release(self, session_id: str, actor_id: str, handle: ActorHandle) -> bool:
        """A host unbinds a session (closed, hibernated, abandoned). False: the host is empty
        and surplus to the pool, and should exit."""
        found = self.bound.get(session_id)
        if found is not None and found.actor_id == actor_id:
            del self.bound[session_id]
        host = self.hosts.get(actor_id)
        if host is None:
            host = self.hosts[actor_id] = Host(handle, actor_id)  # known again after a restart
        host.sessions.discard(session_id)
        # Bounded by the configured size, not the demand: idle hosts are Ray workers.
        if not host.sessions and self._empty() > 2 * max(self.settings.session_pool_size, 1):
            del self.hosts[actor_id]
            return False
        return True

    async def drop(self, session_id: str) -> None:
        """Forget a binding whose host is gone for good; the next call binds a new host."""
        found = self.bound.pop(session_id, None)
        if found is not None:
            host = self.hosts.get(found.actor_id)
            if host is not None:
                host.sessions.discard(session_id)

    async def forget_host(self, actor_id: str) -> None:
        """A host died for good (its node went away): drop it and its bindings."""
        host = self.hosts.pop(actor_id, None)
        for session_id in host.sessions if host is not None else ():
            self.bound.pop(session_id, None)

    async def who_am_i(self, actor_id: str) -> list[str]:
        host = self.hosts.get(actor_id)
        return sorted(host.sessions) if host is not None else []

    async def stats(self) -> dict[str, Any]:
        return {
            "live": len(self.bound),
            "hosts": len(self.hosts),
            "empty_hosts": self._empty(),
            "creating": self.creating,
            "created_total": self.created_total,
            "per_host": sorted((len(h.sessions) for h in self.hosts.values()), reverse=True),
            "per_account": dict(Counter(b.account_id for b in self.bound.values())),
        }

    async def footprint(self) -> dict[str, int]:
        """What the hosts hold in memory, summed: sessions served and sandboxes their
        adapters remember (warm pools included). A census for the hibernation bench."""
        found = await asyncio.gather(
            *(h.handle.footprint.remote() for h in self.hosts.values()), return_exceptions=True
        )
        held = [cast("dict[str, list[str]]", f) for f in found if isinstance(f, dict)]
        return {
            "hosts": len(held),
            "sessions": sum(len(f["sessions"]) for f in held),
            "sandboxes_in_memory": sum(len(f["sandboxes_in_memory"]) for f in held),
        }


def directory_handle(settings: Settings) -> ActorHandle:
    return SessionDirectory.options(  # type: ignore[attr-defined]
        name=DIRECTORY_NAME,
        namespace=settings.ray_namespace,
        lifetime="detached",
        get_if_exists=True,
    ).remote(settings)
