"""Provisioning and releasing computes, and the adapter handles every later operation uses,
inside the process that hosts them (a session host, or a ``/sandbox`` actor).

Checks that the account may execute on the provider (``adapters/access.py``), builds the
adapter with the account's credentials (``adapters/credentials.py``), calls it, records
the compute row, and undoes the sandbox if anything after it fails, so a failed provision
leaves no sandbox and no row behind.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from cerver.adapters import registry
from cerver.adapters.access import SELF_HOSTED, check_executable, compute_unavailable
from cerver.adapters.base import ComputeAdapter, SandboxRecord, SandboxSpec
from cerver.adapters.catalog import get_profile
from cerver.adapters.credentials import credentials_for
from cerver.adapters.egress_allow import network_spec, require_enforced
from cerver.config import Settings
from cerver.errors import CerverError, ComputeUnavailable, Conflict, NotFound, ProviderError
from cerver.models import ComputeChoice
from cerver.store import ComputeRow, SessionRow, Store
from cerver.store.ids import new_id, now

log = logging.getLogger(__name__)


def record_of(settings: Settings, stored: dict[str, Any]) -> SandboxRecord:
    """A stored compute record as its adapter needs it: env values opened again."""
    from cerver.secretbox import SecretBox
    from cerver.store.sealing import open_record

    return SandboxRecord.model_validate(open_record(stored, SecretBox(settings)))


def stored_record(settings: Settings, record: SandboxRecord) -> dict[str, Any]:
    """A compute record as the store keeps it: env values sealed, never plaintext."""
    from cerver.secretbox import SecretBox
    from cerver.store.sealing import seal_record

    return seal_record(record.model_dump(mode="json"), SecretBox(settings))


@dataclass
class Provisioned:
    provider: str
    compute_id: str
    record: SandboxRecord
    provision_time_ms: float
    price_per_hour_usd: float


class Provisioner:
    """Adapter handles and the compute lifecycle for the sessions/sandboxes of one process.

    ``adapter(provider, account_id)`` is the handle every operation on a sandbox uses
    (create, run, stream, install, files, state, liveness, suspend, release). It is built
    per (provider, account) with that account's credentials, resolved at each call
    (``cerver.adapters.credentials``) so a rotated secret takes effect; an instance is kept
    while the credentials it was built with are current. Self-hosted providers take no
    credentials: one instance per process serves every account (it holds the warm pool and
    the in-process state of its sandboxes).
    """

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self._adapters: dict[tuple[str, str | None], ComputeAdapter] = {}
        self._retired: list[ComputeAdapter] = []

    async def adapter(self, provider: str, account_id: str) -> ComputeAdapter:
        name = registry.canonical(provider)
        if name in SELF_HOSTED:
            return self._instance(name, None, {})
        values = await credentials_for(self.settings, self.store, account_id, name)
        return self._instance(name, account_id if values else None, values)

    def _instance(
        self, name: str, account_id: str | None, values: dict[str, str]
    ) -> ComputeAdapter:
        key = (name, account_id)
        found = self._adapters.get(key)
        if found is not None and found.credentials == values:
            return found
        if found is not None:
            self._retired.append(found)  # rotated: calls in flight finish on the old one
        fresh = registry.get(name)(self.settings, values)
        self._adapters[key] = fresh
        return fresh

    async def warm(self, count: int) -> None:
        """Pre-provision sandboxes of the self-hosted providers in this process."""
        if count <= 0:
            return
        for provider in SELF_HOSTED:
            if self.settings.local_provider and registry.has_adapter(provider):
                await self._instance(provider, None, {}).warm(count)

    async def no_compute_error(self, row: SessionRow) -> ComputeUnavailable:
        return await compute_unavailable(
            self.settings,
            self.store,
            row.account_id,
            f"session {row.id} has no compute attached; attach one with "
            f"POST /v2/sessions/{row.id}/compute",
            runtime=row.runtime,
        )

    async def provision(self, row: SessionRow, choice: ComputeChoice) -> Provisioned:
        if choice.compute_id is not None:
            host = await self._sandbox_host(row.account_id, choice.compute_id, choice)
            if host is None:
                return await self._adopt(row, choice.compute_id)
            choice = host
        return await self.create(
            row.account_id,
            choice,
            runtime=choice.runtime or row.runtime,
            session_id=row.id,
            replacing=row.compute_id,
        )

    async def create(
        self,
        account_id: str,
        choice: ComputeChoice,
        *,
        runtime: str,
        session_id: str | None,
        compute_id: str | None = None,
        replacing: str | None = None,
    ) -> Provisioned:
        """Provision a fresh sandbox on ``choice.provider`` and record its compute row,
        within the account's cap on live computes (``replacing``: the compute a swap will
        release, not counted)."""
        from cerver.actors.account_limits import Admission

        async with Admission(self.settings, "admit_compute", account_id, replacing):
            return await self._create(
                account_id, choice, runtime=runtime, session_id=session_id, compute_id=compute_id
            )

    async def _create(
        self,
        account_id: str,
        choice: ComputeChoice,
        *,
        runtime: str,
        session_id: str | None,
        compute_id: str | None,
    ) -> Provisioned:
        provider = await check_executable(
            self.settings, self.store, account_id, choice.provider or "", runtime=runtime
        )
        adapter = await self.adapter(provider, account_id)
        network, egress_allow = network_spec(choice.network)
        if egress_allow is not None:
            require_enforced(adapter.egress_allowlist, provider)
        spec = SandboxSpec(
            account_id=account_id,
            runtime=runtime,  # type: ignore[arg-type]
            env=choice.env,
            network=network,
            egress_allow=egress_allow,
            resources=choice.resources,
            options=choice.options,
        )
        started = time.perf_counter()
        try:
            record = await adapter.create_sandbox(spec)
        except CerverError:
            raise
        except Exception as exc:  # a provider's own failure, translated at our edge
            raise ProviderError(f"{provider} failed to provision a sandbox: {exc}") from exc
        provision_ms = (time.perf_counter() - started) * 1000.0
        compute_id = compute_id or new_id("cmp")
        try:
            await asyncio.to_thread(
                self.store.computes.insert,
                ComputeRow(
                    id=compute_id,
                    account_id=account_id,
                    provider=provider,
                    status="ready",
                    record=stored_record(self.settings, record),
                    session_id=session_id,
                    created_at=now(),
                    released_at=None,
                    provision_time_ms=provision_ms,
                ),
            )
        except BaseException:
            await adapter.delete_sandbox(record)
            raise
        await self._observe(provider, provision_ms)
        return Provisioned(
            provider=provider,
            compute_id=compute_id,
            record=record,
            provision_time_ms=provision_ms,
            price_per_hour_usd=get_profile(provider).price_per_hour_usd,
        )

    async def _sandbox_host(
        self, account_id: str, compute_id: str, choice: ComputeChoice
    ) -> ComputeChoice | None:
        """A compute that hosts sandboxes (a relay host) is not adopted: a new sandbox is
        made on it, for this session. Answers that provision request, or None."""
        found = await asyncio.to_thread(self.store.computes.get, compute_id, account_id)
        if found is None or not getattr(registry.get(found.provider), "hosts_sandboxes", False):
            return None
        options = {**choice.options, "host_compute_id": found.id}
        return choice.model_copy(
            update={"provider": found.provider, "compute_id": None, "options": options}
        )

    async def _adopt(self, row: SessionRow, compute_id: str) -> Provisioned:
        compute = await asyncio.to_thread(self.store.computes.get, compute_id, row.account_id)
        if compute is None or compute.status == "released":
            raise NotFound(f"compute {compute_id} not found; list yours with GET /v2/computes")
        if compute.session_id not in (None, row.id):
            raise Conflict(
                f"compute {compute_id} is attached to session {compute.session_id}; "
                "swap that session's compute first"
            )
        if compute.record is None:
            raise Conflict(f"compute {compute_id} is not ready (status {compute.status})")
        record = record_of(self.settings, compute.record)
        adapter = await self.adapter(compute.provider, row.account_id)
        if not await adapter.is_alive(record):
            raise Conflict(f"compute {compute_id} no longer exists at {compute.provider}")
        await asyncio.to_thread(self.store.computes.update, compute_id, session_id=row.id)
        self._stop_sandbox_host(compute_id)
        return Provisioned(
            provider=compute.provider,
            compute_id=compute_id,
            record=record,
            provision_time_ms=0.0,
            price_per_hour_usd=get_profile(compute.provider).price_per_hour_usd,
        )

    def _stop_sandbox_host(self, compute_id: str) -> None:
        """A compute made through /sandbox was hosted by its own actor; the session's actor
        hosts it from now on (its in-memory interpreter state does not move)."""
        import ray

        try:
            host = ray.get_actor(compute_id, namespace=self.settings.ray_namespace)
        except ValueError:
            return
        ray.kill(host, no_restart=True)

    async def _observe(self, provider: str, provision_ms: float) -> None:
        """Best effort: learning data for the recommender, never a create's failure (the
        sandbox and its compute row exist by now; issue 16 saw this write time out on
        SQLite's lock in a loaded burst and fail the whole create)."""
        try:
            await asyncio.to_thread(
                self.store.observations.record, provider, "startup_ms", provision_ms, True,
                "session",
            )  # fmt: skip
        except SQLAlchemyError as exc:
            log.warning("startup observation of %s not recorded: %s", provider, exc)

    async def release(self, compute_id: str, record: SandboxRecord, account_id: str) -> None:
        adapter = await self.adapter(record.provider, account_id)
        await adapter.delete_sandbox(record)
        await asyncio.to_thread(self.store.computes.release, compute_id)

    def sandboxes_in_memory(self) -> set[str]:
        adapters = [*self._adapters.values(), *self._retired]
        return set().union(*(a.sandboxes_in_memory() for a in adapters))

    async def close(self) -> None:
        adapters = [*self._adapters.values(), *self._retired]
        self._adapters.clear()
        self._retired.clear()
        for adapter in adapters:
            await adapter.close()
