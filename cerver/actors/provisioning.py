"""Provisioning and releasing computes for a session, inside the process that hosts it.

Checks that the account may execute on the provider, resolves credentials, calls the
adapter, records the compute row, and undoes the sandbox if anything after it fails, so a
failed provision leaves no sandbox and no row behind.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from cerver import secrets
from cerver.adapters import registry
from cerver.adapters.access import SELF_HOSTED, executable_providers
from cerver.adapters.base import ComputeAdapter, SandboxRecord, SandboxSpec
from cerver.adapters.catalog import get_profile
from cerver.config import Settings
from cerver.errors import CerverError, ComputeUnavailable, Conflict, NotFound, ProviderError
from cerver.models import ComputeChoice
from cerver.store import ComputeRow, SessionRow, Store
from cerver.store.ids import new_id, now


@dataclass
class Provisioned:
    provider: str
    compute_id: str
    record: SandboxRecord
    provision_time_ms: float
    price_per_hour_usd: float


def compute_unavailable(
    settings: Settings, store: Store, account_id: str, message: str, *, runtime: str | None = None
) -> ComputeUnavailable:
    """A 409 that says what the account *can* use, with a recommendation among those."""
    usable = sorted(executable_providers(settings, store, account_id))
    details: dict[str, Any] = {"usable_providers": usable}
    details["recommendation"] = recommend_for(usable, runtime)
    hint = (
        f"usable here: {', '.join(usable)}; for example send "
        f'{{"compute": {{"provider": "{usable[0]}"}}}}'
        if usable
        else "register a provider with POST /v2/account/providers or connect a relay"
    )
    return ComputeUnavailable(f"{message}; {hint}", details=details)


def recommend_for(usable: list[str], runtime: str | None) -> dict[str, Any] | None:
    from cerver.adapters.catalog import all_profiles
    from cerver.gateway.models import RecommendRequest
    from cerver.gateway.recommend import recommend

    body: dict[str, Any] = {"task": "session compute", "policy": {"mode": "balanced"}}
    if runtime in ("python", "node"):
        body["requirements"] = {"runtime": runtime}
    try:
        rec = recommend(RecommendRequest.model_validate(body), all_profiles(), set(usable))
    except CerverError as exc:
        return {"recommended_provider": None, "error": exc.to_body()["error"]}
    return rec.model_dump(mode="json")


class Provisioner:
    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self._adapters: dict[str, ComputeAdapter] = {}

    def adapter(self, provider: str) -> ComputeAdapter:
        name = registry.canonical(provider)
        adapter = self._adapters.get(name)
        if adapter is None:
            adapter = registry.get(name)(self.settings, {})
            self._adapters[name] = adapter
        return adapter

    async def warm(self, count: int) -> None:
        """Pre-provision sandboxes of the self-hosted providers in this process."""
        if count <= 0:
            return
        for provider in SELF_HOSTED:
            if self.settings.local_provider and registry.has_adapter(provider):
                await self.adapter(provider).warm(count)

    def no_compute_error(self, row: SessionRow) -> ComputeUnavailable:
        return compute_unavailable(
            self.settings,
            self.store,
            row.account_id,
            f"session {row.id} has no compute attached; attach one with "
            f"POST /v2/sessions/{row.id}/compute",
            runtime=row.runtime,
        )

    async def provision(self, row: SessionRow, choice: ComputeChoice) -> Provisioned:
        if choice.compute_id is not None:
            return await self._adopt(row, choice.compute_id)
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
        provider = registry.canonical(choice.provider or "")
        usable = await asyncio.to_thread(
            executable_providers, self.settings, self.store, account_id
        )
        if provider not in usable:
            get_profile(provider)  # an unknown name is a 400 that lists the valid ones
            raise compute_unavailable(
                self.settings,
                self.store,
                account_id,
                f"this account cannot execute on {provider!r} here (no adapter, credentials "
                "or compute for it)",
                runtime=runtime,
            )
        adapter = await self._adapter_with_credentials(account_id, provider)
        spec = SandboxSpec(
            account_id=account_id,
            runtime=runtime,  # type: ignore[arg-type]
            env=choice.env,
            network=choice.network,
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
                    record=record.model_dump(mode="json"),
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
        record = SandboxRecord.model_validate(compute.record)
        if not await self.adapter(compute.provider).is_alive(record):
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

    async def _adapter_with_credentials(self, account_id: str, provider: str) -> ComputeAdapter:
        refs = await asyncio.to_thread(self.store.credentials.refs, account_id, provider)
        if not refs:
            return self.adapter(provider)
        # Credentials differ per account: a fresh instance, never cached across accounts.
        return registry.get(provider)(self.settings, secrets.resolve(provider, refs))

    async def _observe(self, provider: str, provision_ms: float) -> None:
        from cerver.store.observations import Observations

        observations = Observations(self.store.sessions.engine)
        await asyncio.to_thread(
            observations.record, provider, "startup_ms", provision_ms, True, "session"
        )

    async def release(self, compute_id: str, record: SandboxRecord) -> None:
        await self.adapter(record.provider).delete_sandbox(record)
        await asyncio.to_thread(self.store.computes.release, compute_id)

    async def close(self) -> None:
        for adapter in self._adapters.values():
            await adapter.close()
        self._adapters.clear()
