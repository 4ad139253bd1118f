"""The one access check: may this account *execute* on a provider here (as opposed to be
*advised* about it)? An adapter exists, and the provider is self-hosted (and enabled) or
the account registered credentials for it.

Every caller goes through here: session create / swap and provisioning
(``cerver/actors/provisioning.py``), ``POST /sandbox``, ``/gateway/recommend`` (which
providers to mark executable), canary stress tests, and ``GET /v2/computes``. Everything
is ``async`` and reads the store in a worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
from typing import Any

from cerver.adapters import registry
from cerver.adapters.catalog import get_profile
from cerver.config import Settings
from cerver.errors import CerverError, ComputeUnavailable
from cerver.store import Store

# Providers that need no per-account credentials: they run on this deployment's own nodes.
SELF_HOSTED = ("local", "ray")


def _executable_now(settings: Settings, store: Store, account_id: str) -> set[str]:
    usable = {p for p in SELF_HOSTED if settings.local_provider and registry.has_adapter(p)}
    for provider in store.credentials.providers(account_id):
        if registry.has_adapter(provider):
            usable.add(registry.canonical(provider))
    # Hosts of the account's own (relay machines) and providers the deployment configured.
    for provider in store.computes.host_providers(account_id):
        if registry.has_adapter(provider):
            usable.add(provider)
    for name in registry.names():
        if registry.get(name).deployment_configured(settings):
            usable.add(name)
    return usable


async def executable_providers(settings: Settings, store: Store, account_id: str) -> set[str]:
    """The providers ``account_id`` may execute on here (canonical names)."""
    return await asyncio.to_thread(_executable_now, settings, store, account_id)


def why_not_executable(provider: str, settings: Settings) -> str:
    """What stands between an account and executing on ``provider``, in one sentence."""
    if not registry.has_adapter(provider):
        return f"{provider} is in the catalog for advice only: no adapter exists yet"
    if provider in SELF_HOSTED and not settings.local_provider:
        return f"the {provider} provider is disabled on this server (CERVER_LOCAL_PROVIDER)"
    return f"no {provider} credentials registered for this account (POST /v2/account/providers)"


async def check_executable(
    settings: Settings, store: Store, account_id: str, provider: str, *, runtime: str | None
) -> str:
    """The canonical provider name if ``account_id`` may execute on it here; otherwise an
    unknown name is a 400 listing the valid ones and a known one a 409 with what the account
    *can* use."""
    name = registry.canonical(provider)
    usable = await executable_providers(settings, store, account_id)
    if name in usable:
        return name
    get_profile(name)  # an unknown name is a 400 that lists the valid ones
    raise unavailable(
        usable,
        f"this account cannot execute on {name!r} here (no adapter, credentials or compute for it)",
        runtime=runtime,
    )


async def compute_unavailable(
    settings: Settings,
    store: Store,
    account_id: str,
    message: str,
    *,
    runtime: str | None,
    exclude: frozenset[str] = frozenset(),
) -> ComputeUnavailable:
    """A 409 that says what the account *can* use, with a recommendation among those
    (``exclude``: providers not to suggest, e.g. the relay that is offline)."""
    usable = await executable_providers(settings, store, account_id)
    return unavailable(usable - exclude, message, runtime)


def unavailable(usable: set[str], message: str, runtime: str | None) -> ComputeUnavailable:
    names = sorted(usable)
    details: dict[str, Any] = {
        "usable_providers": names,
        "recommendation": _recommend_among(names, runtime),
    }
    hint = (
        f"usable here: {', '.join(names)}; for example send "
        f'{{"compute": {{"provider": "{names[0]}"}}}}'
        if names
        else "register a provider with POST /v2/account/providers or connect a relay"
    )
    return ComputeUnavailable(f"{message}; {hint}", details=details)


def _recommend_among(usable: list[str], runtime: str | None) -> dict[str, Any] | None:
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
