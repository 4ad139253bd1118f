"""Long-form session create: requirements + policy routed through the recommender, then the
recommended provider and its executable fallbacks are tried in order."""

from __future__ import annotations

import asyncio
from typing import Any

from cerver.adapters.access import executable_providers
from cerver.adapters.catalog import effective_profiles
from cerver.gateway.models import Policy, RecommendRequest, Requirements
from cerver.gateway.recommend import recommend
from cerver.models import ComputeChoice, CreateSession
from cerver.serve_app.deps import AppContext
from cerver.store import Account

_RUNTIMES = {"python": "python", "node": "node", "shell": "shell", "bash": "shell"}


async def routed_choices(
    c: AppContext, account: Account, body: CreateSession
) -> tuple[list[ComputeChoice], dict[str, Any]]:
    request = RecommendRequest(
        task=body.task,
        workload=body.workload,
        repo=body.repo,
        requirements=body.requirements or Requirements(),
        policy=body.policy or Policy(),
        session_name=body.session_name,
    )
    usable = await executable_providers(c.settings, c.store, account.id)
    profiles = await asyncio.to_thread(effective_profiles, c.store.observations)
    rec = recommend(request, profiles, usable)
    runtime = body.runtime or _RUNTIMES.get(request.requirements.runtime or "")
    order = [rec.recommended_provider, *[p for p in rec.fallback_order if p in usable]]
    choices = [ComputeChoice(provider=p, runtime=runtime) for p in order]  # type: ignore[arg-type]
    routing = rec.routing.model_dump() | {
        "confidence_value": rec.confidence_value,
        "mode": rec.mode,
    }
    return choices, routing
