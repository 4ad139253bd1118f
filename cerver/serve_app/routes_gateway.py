"""HTTP routes of the gateway: recommend and stress tests. Thin: parse, authorise, call the
pure recommender / the stress service, return the model."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends

from cerver.adapters.access import executable_providers
from cerver.adapters.catalog import ProviderProfile, effective_profiles
from cerver.adapters.credentials import credentials_for
from cerver.errors import Unauthorized
from cerver.gateway.models import Recommendation, RecommendRequest
from cerver.gateway.recommend import recommend
from cerver.serve_app.deps import AppContext, ctx, optional_account
from cerver.serve_app.errors import ERROR_RESPONSES
from cerver.serve_app.ratelimit import rate_limit
from cerver.store import Account
from cerver.stress import service
from cerver.stress.models import StressRequest, StressResult

router = APIRouter(prefix="/gateway", tags=["gateway"], responses=ERROR_RESPONSES)


async def _profiles(c: AppContext) -> list[ProviderProfile]:
    return await asyncio.to_thread(effective_profiles, c.store.observations)


@router.post("/recommend", response_model=Recommendation, dependencies=[Depends(rate_limit)])
async def post_recommend(
    body: RecommendRequest,
    c: AppContext = Depends(ctx),
    caller: Account | None = Depends(optional_account),
) -> Recommendation:
    profiles = await _profiles(c)
    executable = None
    if caller is not None:
        executable = await executable_providers(c.settings, c.store, caller.id)
    return recommend(body, profiles, executable)


@router.post("/stress-tests", response_model=StressResult, dependencies=[Depends(rate_limit)])
async def post_stress_test(
    body: StressRequest,
    c: AppContext = Depends(ctx),
    caller: Account | None = Depends(optional_account),
) -> StressResult:
    profiles = await _profiles(c)
    if body.mode == "simulate":
        return await service.submit(body, profiles, settings=c.settings)
    if caller is None:
        raise Unauthorized(
            "a canary runs on your compute: send 'Authorization: Bearer <CERVER_API_TOKEN>'"
        )
    executable = await executable_providers(c.settings, c.store, caller.id)
    if body.providers is None:  # a canary defaults to what this account can execute
        body = body.model_copy(update={"providers": sorted(executable) or None})
    credentials = {}
    for name in body.providers or []:
        if name in executable:
            values = await credentials_for(c.settings, c.store, caller.id, name)
            if values:
                credentials[name] = values
    return await service.submit(
        body,
        profiles,
        settings=c.settings,
        credentials=credentials,
        account_id=caller.id,
        executable=executable,
    )


@router.get("/stress-tests/{job_id}", response_model=StressResult)
async def get_stress_test(
    job_id: str,
    c: AppContext = Depends(ctx),
    caller: Account | None = Depends(optional_account),
) -> StressResult:
    # A canary job is its owner's only: another account, or no token, gets 404.
    return await service.poll(job_id, c.settings, caller.id if caller is not None else None)
