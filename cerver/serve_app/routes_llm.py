"""Model turns: ``POST /v2/sessions/:id/run-llm``, and the LLM budgets: the account's
``GET|PUT /v2/account/limits`` and a session's ``GET|PUT /v2/sessions/:id/limits``.
The turn itself lives in cerver/llm/turn.py; this module only checks the request against
the session, wires the ``run`` tool to the session's compute, and answers JSON or SSE."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, StreamingResponse

from cerver.actors.account_limits import Admission
from cerver.adapters.access import compute_unavailable
from cerver.adapters.base import ExecRequest
from cerver.config import Settings
from cerver.errors import CerverError, SessionClosed
from cerver.llm.conversation import estimate_tokens, exchanges
from cerver.llm.service import LlmService
from cerver.llm.tools import ToolOutcome, outcome_of
from cerver.llm.turn import Event, Plan, ToolRunner, Turn
from cerver.llm.wire import (
    AccountLimits,
    AccountLimitsView,
    RunLlmRequest,
    SessionLimits,
    SessionLimitsView,
)
from cerver.serve_app.deps import AppContext, account, ctx
from cerver.serve_app.errors import ERROR_RESPONSES
from cerver.serve_app.routes_sessions import owned_session
from cerver.store import Account, SessionRow

router = APIRouter(tags=["llm"], responses=ERROR_RESPONSES)

MAX_TRANSCRIPT = 100_000
LANGUAGES = ("shell", "python", "node")


def llm_of(c: AppContext) -> LlmService:
    if c.llm is None:
        c.llm = LlmService(c.settings, c.store)
    return c.llm


@router.post("/v2/sessions/{session_id}/run-llm")
async def run_llm(
    session_id: str,
    body: RunLlmRequest,
    who: Account = Depends(account),
    c: AppContext = Depends(ctx),
) -> Any:
    received = time.time()
    row = await owned_session(c, who, session_id)
    if row.status == "closed":
        raise SessionClosed(f"session {session_id} is closed; create a new session for new turns")
    if body.tools and row.compute_id is None:
        raise await compute_unavailable(
            c.settings,
            c.store,
            who.id,
            f"tools run in the session's compute and session {row.id} has none; attach one "
            f'with POST /v2/sessions/{row.id}/compute, or drop "tools"',
            runtime=row.runtime,
        )
    service = llm_of(c)
    mine, entries = await asyncio.gather(  # two reads, side by side
        service.account_models(who.id),  # the account's own model keys and models, if any
        asyncio.to_thread(c.store.sessions.transcript, row.id, limit=MAX_TRANSCRIPT),
    )
    own = mine.endpoints
    past = exchanges(entries)
    context = sum(estimate_tokens(e.user) + estimate_tokens(e.assistant) for e in past)
    models, ladder, decision = service.plan_models(
        row,
        body,
        depth=len(past),
        context_tokens=context + estimate_tokens(body.input),
        account=mine,
    )
    service.harness_for(models[0], own)  # no key for it: 409 now, before anything is written
    plan = Plan(
        models=models,
        ladder=ladder,
        routing=decision,
        max_output_tokens=service.max_output(body),
    )
    runner = _tool_runner(c, row, who) if body.tools else None
    turn = Turn(service, row, body, plan, runner, entries, own=own)
    events = turn.events()
    if body.stream:
        return await _stream(row, turn, events, received)
    done: dict[str, Any] = {}
    async for event in events:
        if event.kind == "done":
            done = event.data
    return JSONResponse(
        done,
        headers={"X-Cerver-Session-Id": row.id, "X-Cerver-Model": str(done.get("model"))},
    )


async def _stream(
    row: SessionRow, turn: Turn, events: AsyncIterator[Event], received: float
) -> StreamingResponse:
    try:
        first = await anext(events)  # errors before the first event answer with their status
    except BaseException:
        await events.aclose()  # type: ignore[attr-defined]
        raise
    open_ms = (time.time() - received) * 1000.0
    model = turn.model_used.name  # the model whose call produced the first event
    headers = {
        "X-Cerver-Session-Id": row.id,
        "X-Cerver-Model": str(model),
        "X-Cerver-Stream-Latency-Ms": f"{open_ms:.3f}",
        "Cache-Control": "no-store",
    }

    async def sse() -> AsyncIterator[bytes]:
        try:
            yield _sse(first)
            async for event in events:
                yield _sse(event)
        except CerverError as exc:
            yield f"event: error\ndata: {json.dumps(exc.to_body())}\n\n".encode()
        finally:
            await events.aclose()  # type: ignore[attr-defined]

    return StreamingResponse(sse(), media_type="text/event-stream", headers=headers)


def _sse(event: Event) -> bytes:
    return f"event: {event.kind}\ndata: {json.dumps(event.data)}\n\n".encode()


def _tool_runner(c: AppContext, row: SessionRow, who: Account) -> ToolRunner:
    """The `run` tool: the same admission (the account's concurrent-run cap) and session
    router call as ``POST /v2/sessions/:id/run``."""

    async def run(arguments: dict[str, Any]) -> ToolOutcome:
        code = arguments.get("code")
        language = arguments.get("language") or row.runtime
        if not isinstance(code, str) or not code.strip():
            return ToolOutcome(output="the run tool needs a non-empty 'code' string", is_error=True)
        if language not in LANGUAGES:
            return ToolOutcome(
                output=f"language must be one of {', '.join(LANGUAGES)}; got {language!r}",
                is_error=True,
            )
        request = ExecRequest(
            code=code,
            language=language,  # type: ignore[arg-type]
            timeout_s=c.settings.run_timeout_s,
        )
        try:
            async with Admission(c.settings, "start_run", who.id, request.timeout_s):
                out = await c.sessions.run(row.id, who.id, request, time.time())
        except CerverError as exc:
            return ToolOutcome(output=f"the run failed: {exc.message}", is_error=True)
        return outcome_of(out.result.model_dump(), out.seq)

    return run


# --- account limits ---------------------------------------------------------------------
async def _limits_view(c: AppContext, who: Account) -> AccountLimitsView:
    own = await asyncio.to_thread(c.store.llm_spend.budget, who.id)
    month = await asyncio.to_thread(c.store.llm_spend.month, who.id)
    budget, source = _effective(own, c.settings)
    return AccountLimitsView(
        account_id=who.id,
        llm_budget_usd=budget,
        llm_budget_source=source,  # type: ignore[arg-type]
        month=month.month,
        llm_spent_usd=round(month.spent_usd, 10),
        llm_reserved_usd=round(month.reserved_usd, 10),
    )


def _effective(own: float | None, settings: Settings) -> tuple[float | None, str]:
    if own is not None:
        return own, "account"
    if settings.llm_budget_usd is not None:
        return settings.llm_budget_usd, "deployment"
    return None, "none"


@router.get("/v2/account/limits", response_model=AccountLimitsView)
async def get_limits(
    who: Account = Depends(account), c: AppContext = Depends(ctx)
) -> AccountLimitsView:
    return await _limits_view(c, who)


@router.put("/v2/account/limits", response_model=AccountLimitsView)
async def put_limits(
    body: AccountLimits, who: Account = Depends(account), c: AppContext = Depends(ctx)
) -> AccountLimitsView:
    """``{"llm_budget_usd": 5}`` sets this account's monthly (UTC) LLM budget; ``null``
    removes it (the deployment default, CERVER_LLM_BUDGET_USD, applies again)."""
    await asyncio.to_thread(c.store.llm_spend.set_budget, who.id, body.llm_budget_usd)
    return await _limits_view(c, who)


# --- session limits ---------------------------------------------------------------------
async def _session_limits_view(c: AppContext, session_id: str) -> SessionLimitsView:
    budget = await asyncio.to_thread(c.store.llm_spend.session_budget, session_id)
    spent, reserved = await asyncio.to_thread(c.store.llm_spend.session_spend, session_id)
    return SessionLimitsView(
        session_id=session_id,
        llm_budget_usd=budget,
        llm_spent_usd=round(spent, 10),
        llm_reserved_usd=round(reserved, 10),
    )


@router.get("/v2/sessions/{session_id}/limits", response_model=SessionLimitsView)
async def get_session_limits(
    session_id: str, who: Account = Depends(account), c: AppContext = Depends(ctx)
) -> SessionLimitsView:
    row = await owned_session(c, who, session_id)
    return await _session_limits_view(c, row.id)


@router.put("/v2/sessions/{session_id}/limits", response_model=SessionLimitsView)
async def put_session_limits(
    session_id: str,
    body: SessionLimits,
    who: Account = Depends(account),
    c: AppContext = Depends(ctx),
) -> SessionLimitsView:
    """``{"llm_budget_usd": 1}`` sets this session's LLM budget over its life (its turns
    must fit in it and in the account's); ``null`` removes it."""
    row = await owned_session(c, who, session_id)
    await asyncio.to_thread(
        c.store.llm_spend.set_session_budget, row.id, who.id, body.llm_budget_usd
    )
    return await _session_limits_view(c, row.id)
