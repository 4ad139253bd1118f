"""Turning a create/swap request into a concrete compute choice, *before* anything is made:
unknown providers are a 400 listing the valid ones, providers this account cannot execute on
are a 409 with a recommendation, so a refused request leaves no half-made session."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from cerver.adapters import registry
from cerver.adapters.access import _recommend_among, check_executable, executable_providers
from cerver.adapters.egress_allow import NetworkOptions, require_enforced
from cerver.errors import CerverError, ComputeOffline, NotFound
from cerver.models import ComputeChoice, CreateSession
from cerver.serve_app.deps import AppContext
from cerver.store import Account

log = logging.getLogger("cerver.sessions")


async def check_choice(c: AppContext, account: Account, choice: ComputeChoice) -> None:
    if choice.compute_id is not None:
        found = await asyncio.to_thread(c.store.computes.get, choice.compute_id, account.id)
        if found is None or found.status == "released":
            raise NotFound(
                f"compute {choice.compute_id} not found; list yours with GET /v2/computes"
            )
        return
    provider = await check_executable(
        c.settings, c.store, account.id, choice.provider or "", runtime=choice.runtime
    )
    if isinstance(choice.network, NetworkOptions):
        require_enforced(registry.get(provider).egress_allowlist, provider)


async def choices_for_create(
    c: AppContext, account: Account, body: CreateSession
) -> tuple[list[ComputeChoice], dict[str, Any] | None]:
    """The compute candidates to try in order (empty: transcript-only), and the routing."""
    if body.compute_given():
        if body.compute is None:
            return [], None
        await check_choice(c, account, body.compute)
        if body.compute.fallback:
            log.warning(
                'account %s used "compute.fallback", the old name of the top-level '
                '"fallback" of POST /v2/sessions (docs/sessions.md); it still works',
                account.id,
            )
        if body.wants_fallback and body.compute.provider is not None:
            return await fallback_choices(c, account, body.compute)
        return [body.compute], pinned_routing(body.compute)
    if body.is_long_form:
        from cerver.serve_app.long_form import routed_choices

        return await routed_choices(c, account, body)
    default = ComputeChoice(provider=c.settings.default_provider, runtime=body.runtime)
    await check_choice(c, account, default)
    return [default], pinned_routing(default, reason="server default provider")


async def fallback_choices(
    c: AppContext, account: Account, pinned: ComputeChoice
) -> tuple[list[ComputeChoice], dict[str, Any]]:
    """Short form with ``"fallback": true``: the named provider first, then the
    recommendation's order among the other providers this account can execute on. The
    others get the request's runtime, env, network and resources, not its provider
    ``options`` (those belong to the named provider)."""
    usable = sorted(await executable_providers(c.settings, c.store, account.id))
    rec = await asyncio.to_thread(_recommend_among, usable, pinned.runtime) or {}
    ranked = [rec.get("recommended_provider"), *rec.get("fallback_order", []), *usable]
    order = [pinned.provider]
    order += [p for p in ranked if p in usable and p not in order]
    others = [pinned.model_copy(update={"provider": p, "options": {}}) for p in order[1:]]
    routing = pinned_routing(pinned, reason="pinned by the request, with fallback")
    routing["fallback_order"] = order[1:]
    return [pinned, *others], routing


def pinned_routing(choice: ComputeChoice, reason: str = "pinned by the request") -> dict[str, Any]:
    return {
        "recommended_provider": choice.provider,
        "confidence": "high",
        "primary_reason": reason,
        "secondary_reasons": [],
        "fallback_order": [],
        "canary_run": False,
    }


def fallback_choice(exc: CerverError, runtime: str | None) -> ComputeChoice | None:
    """Where an offline compute's work moves with ``"fallback": true``: the recommendation
    the ``compute_offline`` error carries (None when there is nothing to move to)."""
    if not isinstance(exc, ComputeOffline):
        return None
    recommendation = (exc.details or {}).get("recommendation") or {}
    provider = recommendation.get("recommended_provider")
    if not provider:
        return None
    return ComputeChoice(provider=provider, runtime=runtime)  # type: ignore[arg-type]
