"""Per-account caps that must hold across every Serve replica and every host actor: live
computes, open sessions and concurrent runs.

One small named, detached actor (``cerver-account-limits``) admits each new compute, session
and run. Computes and sessions are counted in the store (the truth, which survives restarts)
plus the admissions still in flight; the count and the admission happen under one lock, so
two replicas racing for an account's last slot cannot both win. Runs live only in memory: a
run holds a *lease* until it finishes, and a lease whose holder died expires on its own
(its run's timeout plus a grace period), so a crashed replica cannot leak a slot for good.

Past a cap the caller gets ``LimitReached`` (429, ``Retry-After``), naming the limit, its
value and the setting that raises it. If this actor restarts it comes back with no run
leases (runs in progress are not counted until they finish; the cap holds again for new
runs at once).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import ray
from ray.actor import ActorHandle

from cerver.config import Settings
from cerver.errors import LimitReached
from cerver.store.ids import new_id

logger = logging.getLogger(__name__)

LIMITS_ACTOR_NAME = "cerver-account-limits"
PROVISION_LEASE_S = 900.0  # an admitted create that never reports back frees its slot
RUN_LEASE_GRACE_S = 60.0


@dataclass(frozen=True)
class Limit:
    """One cap: the ``Settings`` field, its environment variable, what it counts."""

    field: str
    env: str
    what: str
    retry_after_s: float

    def error(self, settings: Settings) -> LimitReached:
        value = getattr(settings, self.field)
        return LimitReached(
            f"this account has its maximum of {value} {self.what} ({self.field}); "
            f"finish or release some and retry, or ask the operator to raise {self.env}",
            retry_after_s=self.retry_after_s,
            details={"limit": self.field, "value": value, "setting": self.env},
        )


COMPUTES = Limit(
    "max_computes_per_account",
    "CERVER_MAX_COMPUTES_PER_ACCOUNT",
    "live computes (DELETE /sandbox/{id} or close sessions to free them)",
    30.0,
)
SESSIONS = Limit(
    "max_open_sessions_per_account",
    "CERVER_MAX_OPEN_SESSIONS_PER_ACCOUNT",
    "open sessions (DELETE /v2/sessions/{id} closes one)",
    30.0,
)
RUNS = Limit(
    "max_concurrent_runs_per_account",
    "CERVER_MAX_CONCURRENT_RUNS_PER_ACCOUNT",
    "concurrent runs",
    1.0,
)


@dataclass
class Lease:
    kind: str
    account_id: str
    expires_at: float


class LimitsCore:
    """The actor's logic, plain async Python."""

    def __init__(self, settings: Settings) -> None:
        from cerver.store import Store

        self.settings = settings
        self.store = Store.open(settings.database_url)
        self.leases: dict[str, Lease] = {}
        self._lock = asyncio.Lock()

    def _held(self, kind: str, account_id: str) -> int:
        now = time.monotonic()
        for lease_id in [k for k, v in self.leases.items() if v.expires_at < now]:
            del self.leases[lease_id]
        return sum(1 for v in self.leases.values() if v.kind == kind and v.account_id == account_id)

    def _lease(self, kind: str, account_id: str, ttl_s: float) -> str:
        lease_id = new_id("lease")
        self.leases[lease_id] = Lease(kind, account_id, time.monotonic() + ttl_s)
        return lease_id

    async def admit_compute(self, account_id: str, replacing: str | None = None) -> str:
        """Admit one new compute (``replacing``: the compute a swap releases after it)."""
        async with self._lock:
            live = await asyncio.to_thread(
                self.store.computes.count_live, account_id, exclude=replacing
            )
            if live + self._held("compute", account_id) >= self.settings.max_computes_per_account:
                raise COMPUTES.error(self.settings)
            return self._lease("compute", account_id, PROVISION_LEASE_S)

    async def admit_session(self, account_id: str) -> str:
        async with self._lock:
            open_ = await asyncio.to_thread(self.store.sessions.count_open, account_id)
            held = self._held("session", account_id)
            if open_ + held >= self.settings.max_open_sessions_per_account:
                raise SESSIONS.error(self.settings)
            return self._lease("session", account_id, PROVISION_LEASE_S)

    async def start_run(self, account_id: str, timeout_s: float) -> str:
        if self._held("run", account_id) >= self.settings.max_concurrent_runs_per_account:
            raise RUNS.error(self.settings)
        return self._lease("run", account_id, timeout_s + RUN_LEASE_GRACE_S)

    def done(self, lease_id: str) -> None:
        self.leases.pop(lease_id, None)

    def held(self, account_id: str) -> dict[str, int]:
        return {kind: self._held(kind, account_id) for kind in ("compute", "session", "run")}


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)
class AccountLimits:
    def __init__(self, settings: Settings) -> None:
        self.core = LimitsCore(settings)

    async def admit_compute(self, account_id: str, replacing: str | None = None) -> str:
        return await self.core.admit_compute(account_id, replacing)

    async def admit_session(self, account_id: str) -> str:
        return await self.core.admit_session(account_id)

    async def start_run(self, account_id: str, timeout_s: float) -> str:
        return await self.core.start_run(account_id, timeout_s)

    async def done(self, lease_id: str) -> None:
        self.core.done(lease_id)

    async def held(self, account_id: str) -> dict[str, int]:
        return self.core.held(account_id)


_handles: dict[str, ActorHandle] = {}


def limits_handle(settings: Settings) -> ActorHandle:
    """The limits actor of this namespace (get-or-create), cached per process."""
    handle = _handles.get(settings.ray_namespace)
    if handle is None:
        handle = AccountLimits.options(  # type: ignore[attr-defined]
            name=LIMITS_ACTOR_NAME,
            namespace=settings.ray_namespace,
            lifetime="detached",
            get_if_exists=True,
        ).remote(settings)
        _handles[settings.ray_namespace] = handle
    return handle


# How long a call waits for the limits actor to come back (it restarts on another node when
# its node is lost) before answering 503 "retry".
RESTART_WAIT_S = 30.0


async def call_limits(settings: Settings, method: str, *args: Any) -> Any:
    """Call the limits actor; our own errors come back unwrapped from Ray's. While the actor
    restarts (its node was lost) the call waits for it; a dead one is made afresh once."""
    from ray.exceptions import ActorDiedError, ActorUnavailableError, RayTaskError

    from cerver.actors.calls import ComputeHostRestarted, unwrap

    deadline = time.monotonic() + RESTART_WAIT_S
    remade = False
    while True:
        handle = limits_handle(settings)
        try:
            return await getattr(handle, method).remote(*args)
        except RayTaskError as exc:
            raise unwrap(exc) from None
        except ActorUnavailableError:
            pass  # restarting: not delivered, try again
        except ActorDiedError:
            _handles.pop(settings.ray_namespace, None)  # killed: make a fresh one once
            if remade:
                raise ComputeHostRestarted(
                    "the account-limits actor is gone; retry in a few seconds"
                ) from None
            remade = True
            continue
        if time.monotonic() > deadline:
            raise ComputeHostRestarted(
                "the account-limits actor is restarting; retry in a few seconds"
            ) from None
        await asyncio.sleep(0.2)


class Admission:
    """``async with Admission(settings, "start_run", account_id, timeout_s):`` holds one
    slot for the block (raising ``LimitReached`` if there is none) and frees it after."""

    def __init__(self, settings: Settings, method: str, *args: Any) -> None:
        self.settings = settings
        self.method = method
        self.args = args
        self.lease: str | None = None

    async def __aenter__(self) -> Admission:
        self.lease = await call_limits(self.settings, self.method, *self.args)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.release()

    async def release(self) -> None:
        lease, self.lease = self.lease, None
        if lease is not None:
            await asyncio.shield(call_limits(self.settings, "done", lease))

    def release_soon(self) -> None:
        """Free the slot without waiting for the limits actor's answer (one actor round
        trip off the response): the call is sent now, in order behind this replica's
        earlier calls, and retried in the background if the actor was restarting."""
        lease, self.lease = self.lease, None
        if lease is None:
            return
        sent: Any
        try:
            sent = limits_handle(self.settings).done.remote(lease)
        except Exception:
            sent = None  # no handle now: the background call below copes
        task = asyncio.get_running_loop().create_task(self._confirm(sent, lease))
        _releasing.add(task)
        task.add_done_callback(_releasing.discard)

    async def _confirm(self, sent: Any, lease: str) -> None:
        if sent is not None:
            try:
                await sent
                return
            except Exception:
                pass  # the actor was restarting or remade: call_limits waits for it
        try:
            await call_limits(self.settings, "done", lease)
        except Exception as exc:  # the lease then expires on its own (timeout + grace)
            logger.warning("could not free run slot %s: %s", lease, exc)


# Background releases in flight (a task nobody references may be garbage-collected).
_releasing: set[asyncio.Task[None]] = set()
