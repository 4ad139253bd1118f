"""Dashboard pages of the account: computes, tokens, providers, and compare (stress tests
and a recommendation). Each reads and changes exactly what the API does for the account."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from cerver import provider_credentials
from cerver.adapters.catalog import all_profiles, effective_profiles
from cerver.credential_schemas import SCHEMAS
from cerver.dashboard.pages import changing, failed, page, signed_in
from cerver.errors import CerverError
from cerver.gateway.models import RecommendRequest
from cerver.gateway.recommend import recommend
from cerver.serve_app.deps import AppContext, ctx
from cerver.store.browser_sessions import BrowserSession
from cerver.store.observations import Observations
from cerver.stress import service
from cerver.stress.models import StressRequest

router = APIRouter(prefix="/dashboard", include_in_schema=False)


async def _computes_page(
    request: Request, c: AppContext, who: BrowserSession, code: int = 200, **extra: Any
) -> HTMLResponse:
    rows = await asyncio.to_thread(c.store.computes.for_account, who.account.id)
    return page(request, "computes.html", who, code, computes=rows, **extra)


@router.get("/computes")
async def computes(
    request: Request,
    code: str = "",
    who: BrowserSession = Depends(signed_in),
    c: AppContext = Depends(ctx),
) -> HTMLResponse:
    # ``?code=`` comes from a relay's verification link: the form is filled, not submitted.
    return await _computes_page(request, c, who, user_code=code[:20])


@router.post("/computes/approve")
async def approve_relay(
    request: Request,
    user_code: str = Form("", max_length=20),
    decision: str = Form("approve"),
    who: BrowserSession = Depends(changing),
    c: AppContext = Depends(ctx),
) -> HTMLResponse:
    """Approve a relay's device login, exactly as POST /v2/relay/approve does, or deny it
    (the relay's next poll answers ``access_denied``)."""
    relays = c.store.relays
    try:
        if decision == "deny":
            await asyncio.to_thread(relays.deny, user_code.strip())
            return await _computes_page(request, c, who, denied=user_code.strip())
        compute_id = await asyncio.to_thread(relays.approve, user_code.strip(), who.account.id)
    except CerverError as exc:
        return await _computes_page(request, c, who, **failed(exc))
    return await _computes_page(request, c, who, approved=compute_id)


# --- tokens ---------------------------------------------------------------------------
async def _tokens_page(
    request: Request, c: AppContext, who: BrowserSession, **extra: Any
) -> HTMLResponse:
    tokens = await asyncio.to_thread(c.store.accounts.tokens, who.account.id)
    return page(request, "tokens.html", who, tokens=tokens, **extra)


@router.get("/tokens")
async def tokens(
    request: Request, who: BrowserSession = Depends(signed_in), c: AppContext = Depends(ctx)
) -> HTMLResponse:
    return await _tokens_page(request, c, who)


@router.post("/tokens")
async def create_token(
    request: Request,
    name: str = Form("", max_length=100),
    who: BrowserSession = Depends(changing),
    c: AppContext = Depends(ctx),
) -> HTMLResponse:
    token = await asyncio.to_thread(
        c.store.accounts.issue_token, who.account.id, name.strip() or None
    )
    # Shown once, in this answer only; the store keeps its hash.
    response = await _tokens_page(request, c, who, new_token=token, new_name=name.strip())
    response.headers["Cache-Control"] = "no-store"
    return response


@router.get("/tokens/{token_id}/revoke")
async def confirm_revoke(
    request: Request,
    token_id: str,
    who: BrowserSession = Depends(signed_in),
    c: AppContext = Depends(ctx),
) -> HTMLResponse:
    tokens = await asyncio.to_thread(c.store.accounts.tokens, who.account.id)
    found = next((t for t in tokens if t.id == token_id and t.revoked_at is None), None)
    if found is None:
        return page(request, "not_found.html", who, 404, what=f"token {token_id}")
    return page(request, "revoke.html", who, token=found)


@router.post("/tokens/{token_id}/revoke")
async def revoke(
    request: Request,
    token_id: str,
    who: BrowserSession = Depends(changing),
    c: AppContext = Depends(ctx),
) -> Response:
    if not await asyncio.to_thread(c.store.accounts.revoke_id, who.account.id, token_id):
        return page(request, "not_found.html", who, 404, what=f"token {token_id}")
    return RedirectResponse("/dashboard/tokens", status_code=303)


# --- providers --------------------------------------------------------------------------
async def _providers_page(
    request: Request, c: AppContext, who: BrowserSession, code: int = 200, **extra: Any
) -> HTMLResponse:
    registered = await asyncio.to_thread(provider_credentials.describe, c.store, who.account.id)
    return page(
        request, "providers.html", who, code, registered=registered, schemas=SCHEMAS, **extra
    )


@router.get("/providers")
async def providers(
    request: Request, who: BrowserSession = Depends(signed_in), c: AppContext = Depends(ctx)
) -> HTMLResponse:
    return await _providers_page(request, c, who)


@router.post("/providers")
async def register_provider(
    request: Request, who: BrowserSession = Depends(changing), c: AppContext = Depends(ctx)
) -> HTMLResponse:
    """Register or rotate, as POST /v2/account/providers does: each field is a value (sealed
    at rest) or, when its box is ticked, the name of a secret in the secrets backend."""
    form = await request.form()
    provider = str(form.get("provider") or "")
    schema = SCHEMAS.get(provider)
    credentials: dict[str, Any] = {}
    for field in schema.fields if schema else ():
        value = str(form.get(f"f_{field}") or "").strip()
        if value:
            credentials[field] = {"secret": value} if form.get(f"ref_{field}") else value
    # openai-compatible: the models its endpoint serves (blank: none of the account's own).
    listed = [m.strip() for m in str(form.get("models") or "").split(",") if m.strip()]
    try:
        await provider_credentials.register(
            c.settings, c.store, who.account.id, provider, credentials, listed or None
        )
    except CerverError as exc:
        return await _providers_page(request, c, who, **failed(exc))
    return await _providers_page(request, c, who, saved=provider)


@router.post("/providers/{provider}/delete")
async def delete_provider(
    request: Request,
    provider: str,
    who: BrowserSession = Depends(changing),
    c: AppContext = Depends(ctx),
) -> HTMLResponse:
    form = await request.form()
    try:
        await provider_credentials.remove(
            c.store, who.account.id, provider, force=bool(form.get("force"))
        )
    except CerverError as exc:
        return await _providers_page(request, c, who, **failed(exc))
    return await _providers_page(request, c, who, deleted=provider)


# --- compare: stress tests and a recommendation ------------------------------------------
def _stress_form(
    request: Request, who: BrowserSession, code: int = 200, **data: Any
) -> HTMLResponse:
    names = sorted(p.name for p in all_profiles())
    return page(request, "stress.html", who, code, provider_names=names, **data)


@router.get("/stress")
async def stress_form(request: Request, who: BrowserSession = Depends(signed_in)) -> HTMLResponse:
    return _stress_form(request, who)


@router.post("/stress")
async def run_stress(
    request: Request, who: BrowserSession = Depends(changing), c: AppContext = Depends(ctx)
) -> HTMLResponse:
    form = await request.form()
    chosen = [str(p) for p in form.getlist("providers")]
    runtime = str(form.get("runtime") or "") or None
    task = str(form.get("task") or "").strip() or None
    body: dict[str, Any] = {
        "task": task,
        "kind": str(form.get("kind") or "preview_launch"),
        "workload": str(form.get("workload") or "") or None,
        "providers": chosen or None,
        "sample_size": str(form.get("sample_size") or "200"),
        "mode": "simulate",
    }
    if runtime:
        body["requirements"] = {"runtime": runtime}
    try:
        stress_request = StressRequest.model_validate(body)
        observations = Observations(c.store.sessions.engine)
        profiles = await asyncio.to_thread(effective_profiles, observations)
        report = await service.submit(stress_request, profiles, settings=c.settings)
        advice = recommend(
            RecommendRequest.model_validate(
                {k: body[k] for k in ("task", "workload", "requirements") if body.get(k)}
                | {"policy": {"mode": str(form.get("mode") or "balanced")}}
            ),
            profiles,
            None,
        )
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        return _stress_form(request, who, 422, error=problems, form=body)
    except CerverError as exc:
        return _stress_form(request, who, **failed(exc), form=body)
    series = [
        {"provider": r.provider, "p50": r.p50_ms, "p95": r.p95_ms, "p99": r.p99_ms}
        for r in report.results.values()
    ]
    return _stress_form(request, who, report=report, advice=advice, series=series, form=body)
