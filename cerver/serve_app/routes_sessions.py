"""The app-facing session API: /v2/sessions and friends."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from cerver.actors.account_limits import Admission
from cerver.actors.calls import Moved
from cerver.actors.messages import SessionRun, StreamStarted, session_event_wire
from cerver.adapters.base import ExecRequest
from cerver.adapters.catalog import get_profile
from cerver.errors import CerverError, NotFound, SessionClosed, Unprocessable
from cerver.metrics import MetricsState
from cerver.models import CreateSession, RunRequest, RunResponse, SessionView, SwapCompute
from cerver.serve_app.compute_choice import check_choice, choices_for_create, fallback_choice
from cerver.serve_app.deps import AppContext, account, ctx, wants_stream
from cerver.serve_app.errors import ERROR_RESPONSES
from cerver.serve_app.timing import add, span
from cerver.serve_app.views import decode_cursor, encode_cursor, metrics_of, session_view
from cerver.store import Account, SessionRow
from cerver.store.ids import new_id, now

router = APIRouter(tags=["sessions"], responses=ERROR_RESPONSES)

DEFAULT_TAIL = 20
MAX_LIST = 200
MAX_FULL = 100_000


async def owned_session(c: AppContext, who: Account, session_id: str) -> SessionRow:
    row = await asyncio.to_thread(c.store.sessions.get, session_id, who.id)
    if row is None:
        raise NotFound(f"session {session_id} not found; list yours with GET /v2/sessions")
    return row


async def current_view(c: AppContext, row: SessionRow, **kwargs: Any) -> SessionView:
    compute = (
        await asyncio.to_thread(c.store.computes.get, row.compute_id) if row.compute_id else None
    )
    llm_calls = await asyncio.to_thread(c.store.llm_spend.session_calls, row.id)
    return session_view(row, compute, llm_calls=llm_calls, **kwargs)


@router.post("/v2/sessions", status_code=201, response_model=SessionView)
async def create_session(
    body: CreateSession,
    request: Request,
    who: Account = Depends(account),
    c: AppContext = Depends(ctx),
) -> SessionView:
    admission = Admission(c.settings, "admit_session", who.id)
    with span(request, "admit"):
        await admission.__aenter__()
    try:
        return await _create_session(c, who, body, request)
    finally:
        with span(request, "release"):
            await admission.release()


async def _create_session(
    c: AppContext, who: Account, body: CreateSession, request: Request
) -> SessionView:
    with span(request, "choose"):
        candidates, routing = await choices_for_create(c, who, body)
    runtime = (
        body.runtime
        or (candidates[0].runtime if candidates else None)
        or (
            get_profile(candidates[0].provider).default_runtime
            if candidates and candidates[0].provider
            else None
        )
        or "shell"
    )
    predicted = None
    if candidates and candidates[0].provider:
        predicted = get_profile(candidates[0].provider).startup_ms_p50
    stamp = now()
    row = SessionRow(
        id=new_id("sess"),
        account_id=who.id,
        name=body.session_name,
        status="provisioning" if candidates else "ready",
        provider=None,
        compute_id=None,
        harness=body.harness,
        runtime=runtime,
        created_at=stamp,
        updated_at=stamp,
        closed_at=None,
        metrics=MetricsState(predicted_startup_ms=predicted).dump(),
        routing=routing,
    )
    opening = {
        "event": "created",
        "session_name": body.session_name,
        "harness": body.harness,
        "runtime": runtime,
        "compute": "none (transcript-only)" if not candidates else "requested",
    }
    if body.llm_budget_usd is not None:  # in place before the session can take a turn
        await asyncio.to_thread(
            c.store.llm_spend.set_session_budget, row.id, who.id, body.llm_budget_usd
        )
    try:
        with span(request, "store"):
            await asyncio.to_thread(c.store.sessions.create, row, [("system", opening)])
    except BaseException:
        await asyncio.to_thread(c.store.llm_spend.forget_session, row.id)
        raise
    if candidates:
        await _provision_first_that_works(
            c, row, candidates, fallback=body.wants_fallback, request=request
        )
    with span(request, "view"):
        fresh = await owned_session(c, who, row.id)
        return await current_view(c, fresh)


async def _provision_first_that_works(
    c: AppContext, row: SessionRow, candidates: list, *, fallback: bool,
    request: Request | None = None,
) -> None:  # fmt: skip
    """Walk the candidates (the routing's fallback order); with ``fallback``, an offline
    relay host's recommendation joins them. On total failure undo everything."""
    attempts: list[dict[str, Any]] = []
    last: BaseException | None = None
    reasons: dict[int, str] = {}
    try:
        for choice in candidates:
            started = time.perf_counter()
            reason = reasons.get(id(choice), "create")
            spans: dict[str, float] = {}
            try:
                attached = await c.sessions.attach(
                    row.id, row.account_id, choice, reason, spans=spans
                )
            except CerverError as exc:
                last = exc
                moved = fallback_choice(exc, choice.runtime) if fallback else None
                if moved is not None:  # an offline relay host: go where it recommends
                    reasons[id(moved)] = f"fallback: {exc.message}"
                    candidates.append(moved)
                attempts.append(
                    {
                        "provider": choice.provider,
                        "ok": False,
                        "error": exc.to_body()["error"],
                        "ms": round((time.perf_counter() - started) * 1000, 3),
                    }
                )
                continue
            if request is not None:
                _attach_timing(request, started, spans, attached.timings)
            attempts.append(
                {
                    "provider": choice.provider,
                    "ok": True,
                    "ms": round((time.perf_counter() - started) * 1000, 3),
                }
            )
            if len(candidates) > 1 and row.routing is not None:
                await asyncio.to_thread(
                    c.store.sessions.update, row.id, routing={**row.routing, "attempts": attempts}
                )
            return
    except BaseException:
        await _undo_create(c, row)
        raise
    await _undo_create(c, row)
    if last is not None and len(candidates) > 1 and isinstance(last, CerverError):
        last.details = {"attempts": attempts, "last_error": last.details}
    assert last is not None
    raise last


def _attach_timing(
    request: Request, started: float, spans: dict[str, float], inside: dict[str, float]
) -> None:
    """A create's attach as Server-Timing phases: ``route`` (the session directory placing
    the session on a host, a host start included when every host is full), ``actor`` (the
    hop), and the host's own: ``load``, ``provision`` (of it ``adapter``: the provider's
    create), ``commit``."""
    call_ms = (time.perf_counter() - started) * 1000.0
    route_ms = spans.get("route", 0.0)
    add(request, "route", route_ms)
    hosted = sum(ms for name, ms in inside.items() if name != "adapter")
    add(request, "actor", call_ms - route_ms - hosted)
    for name, ms in inside.items():
        add(request, name, ms)


async def _undo_create(c: AppContext, row: SessionRow) -> None:
    await c.sessions.abandon(row.id)
    await asyncio.to_thread(c.store.sessions.delete, row.id)
    await asyncio.to_thread(c.store.llm_spend.forget_session, row.id)


@router.get("/v2/sessions")
async def list_sessions(
    limit: int = Query(20, ge=1, le=MAX_LIST),
    name: str | None = Query(None, max_length=200),
    cursor: str | None = None,
    who: Account = Depends(account),
    c: AppContext = Depends(ctx),
) -> dict[str, Any]:
    before = decode_cursor(cursor) if cursor else None
    rows = await asyncio.to_thread(
        c.store.sessions.page, who.id, limit=limit + 1, name=name, before=before
    )
    page, more = rows[:limit], len(rows) > limit
    computes = {
        r.compute_id: await asyncio.to_thread(c.store.computes.get, r.compute_id)
        for r in page
        if r.compute_id
    }
    llm_calls = {r.id: await asyncio.to_thread(c.store.llm_spend.session_calls, r.id) for r in page}
    return {
        "sessions": [
            session_view(
                r, computes.get(r.compute_id) if r.compute_id else None, llm_calls=llm_calls[r.id]
            ).model_dump()
            for r in page
        ],
        "next_cursor": encode_cursor(page[-1]) if more and page else None,
    }


@router.get("/v2/sessions/{session_id}", response_model=SessionView)
async def get_session(
    session_id: str,
    tail: int | None = Query(None, ge=0, le=MAX_FULL),
    since: int | None = Query(None, ge=0),
    full: bool = False,
    max_bytes: int | None = Query(
        None, ge=1024, description="Page size in bytes (at most CERVER_TRANSCRIPT_PAGE_MAX_BYTES)"
    ),
    who: Account = Depends(account),
    c: AppContext = Depends(ctx),
) -> SessionView:
    """The session and a page of its transcript: the last ``tail`` entries (20 by default),
    the entries after ``since``, or from the start (``full``). A page holds at most
    CERVER_TRANSCRIPT_FULL_MAX_ENTRIES entries and ``max_bytes`` bytes; ``transcript_more``
    says entries after ``next_since`` were left out (ask again with ``since=next_since``)."""
    row = await owned_session(c, who, session_id)
    settings = c.settings
    page = {
        "max_entries": settings.transcript_full_max_entries,
        "max_bytes": min(
            max_bytes or settings.transcript_page_max_bytes, settings.transcript_page_max_bytes
        ),
    }
    if full:
        page["since"] = 0
    elif since is not None:
        page["since"] = since
        if tail:
            page["max_entries"] = min(tail, settings.transcript_full_max_entries)
    else:
        page["tail"] = DEFAULT_TAIL if tail is None else tail
    entries, more = await asyncio.to_thread(c.store.sessions.transcript_page, row.id, **page)
    length = await asyncio.to_thread(c.store.sessions.transcript_length, row.id)
    size = await asyncio.to_thread(c.store.sessions.transcript_bytes, row.id)
    return await current_view(
        c,
        row,
        transcript=entries,
        transcript_length=length,
        transcript_more=more,
        transcript_bytes=size,
    )


@router.get("/v2/sessions/{session_id}/metrics")
async def session_metrics(
    session_id: str, who: Account = Depends(account), c: AppContext = Depends(ctx)
) -> dict[str, Any]:
    row = await owned_session(c, who, session_id)
    return {
        "session_id": row.id,
        "status": row.status,
        "provider": row.provider,
        "metrics": metrics_of(
            row, await asyncio.to_thread(c.store.llm_spend.session_calls, row.id)
        ).model_dump(),
    }


@router.post("/v2/sessions/{session_id}/compute", response_model=SessionView)
async def swap_compute(
    session_id: str,
    body: SwapCompute,
    who: Account = Depends(account),
    c: AppContext = Depends(ctx),
) -> SessionView:
    row = await owned_session(c, who, session_id)
    if row.status == "closed":
        raise SessionClosed(f"session {session_id} is closed; create a new session")
    if body.compute is not None:
        await check_choice(c, who, body.compute)
    await c.sessions.attach(row.id, who.id, body.compute, "swap")
    return await current_view(c, await owned_session(c, who, session_id))


@router.delete("/v2/sessions/{session_id}", response_model=SessionView)
async def close_session(
    session_id: str, who: Account = Depends(account), c: AppContext = Depends(ctx)
) -> SessionView:
    row = await owned_session(c, who, session_id)
    if row.status != "closed":
        await c.sessions.close(row.id, who.id)
    return await current_view(c, await owned_session(c, who, session_id))


@router.post(
    "/v2/sessions/{session_id}/run",
    response_model=RunResponse,
    responses={
        200: {
            "description": "the run's result, or with `stream: true` its events (SSE)",
            "content": {"application/json": {}, "text/event-stream": {}},
        }
    },
)
async def run(
    session_id: str,
    body: RunRequest,
    request: Request,
    who: Account = Depends(account),
    c: AppContext = Depends(ctx),
) -> Any:
    received = time.time()
    timeout = body.timeout if body.timeout is not None else c.settings.run_timeout_s
    if timeout > c.settings.max_run_timeout_s:
        raise Unprocessable(
            f"timeout {timeout}s is above this server's maximum of "
            f"{c.settings.max_run_timeout_s}s; lower it",
            details={"field": "timeout", "max": c.settings.max_run_timeout_s},
        )
    if wants_stream(body.stream, request):
        row = await _runnable(c, who, session_id)
        return await _stream(c, row, _exec_request(body, row, timeout), received)
    # The session's row (a store read) and the run's slot (the limits actor) at once.
    admission = Admission(c.settings, "start_run", who.id, timeout)
    with span(request, "session+admit"):
        try:
            found, admitted = await asyncio.gather(
                _runnable(c, who, session_id), admission.__aenter__(), return_exceptions=True
            )
        except BaseException:  # cancelled (the client went away): free a slot already taken
            admission.release_soon()
            raise
    for failed in (found, admitted):  # the session's error first (404 before 429)
        if isinstance(failed, BaseException):
            await admission.release()  # a slot taken for a run that will not happen
            raise failed
    assert isinstance(found, SessionRow)
    row = found
    try:
        exec_request = _exec_request(body, row, timeout)
        out = await _run_timed(c, row, who, body, exec_request, received, request)
    finally:
        admission.release_soon()
    headers = {
        "X-Cerver-Session-Id": row.id,
        "X-Cerver-Provider": out.provider,
    }
    payload = RunResponse(
        session_id=row.id,
        provider=out.provider,
        compute_id=out.compute_id,
        latency_ms=round((time.time() - received) * 1000.0, 3),
        seq=out.seq,
        **out.result.model_dump(),
    )
    return JSONResponse(payload.model_dump(), headers=headers)


async def _runnable(c: AppContext, who: Account, session_id: str) -> SessionRow:
    row = await owned_session(c, who, session_id)
    if row.status == "closed":
        raise SessionClosed(f"session {session_id} is closed; create a new session to run code")
    return row


def _exec_request(body: RunRequest, row: SessionRow, timeout: float) -> ExecRequest:
    return ExecRequest(
        code=body.code,
        language=body.language or row.runtime,  # type: ignore[arg-type]
        timeout_s=timeout,
        env=body.env,
        cwd=body.cwd,
        # No language given on a node/python session: code that does not parse as the
        # runtime's language runs as shell (docs/providers.md), where the adapter can tell.
        shell_fallback=body.language is None and row.runtime != "shell",
    )


async def _run_timed(
    c: AppContext,
    row: SessionRow,
    who: Account,
    body: RunRequest,
    exec_request: ExecRequest,
    received: float,
    request: Request,
) -> SessionRun:
    """The run on the session's host; Server-Timing gets ``route`` (finding the host),
    ``actor`` (the call's round trip outside the host) and the host's own phases."""
    spans: dict[str, float] = {}
    started = time.perf_counter()
    try:
        out = await c.sessions.run(row.id, who.id, exec_request, received, spans=spans)
    except CerverError as exc:
        moved = fallback_choice(exc, row.runtime) if body.fallback else None
        if moved is None:
            raise
        # The session's compute is offline: move the session (the transcript records
        # the attach and why), then run there.
        await c.sessions.attach(row.id, who.id, moved, f"fallback: {exc.message}")
        out = await c.sessions.run(row.id, who.id, exec_request, received)
    call_ms = (time.perf_counter() - started) * 1000.0
    route_ms = spans.get("route", 0.0)
    add(request, "route", route_ms)
    add(request, "actor", call_ms - route_ms - sum(out.timings.values()))
    for name, ms in out.timings.items():
        add(request, name, ms)
    return out


async def _stream(
    c: AppContext, row: SessionRow, request: ExecRequest, received: float
) -> StreamingResponse:
    slot = await Admission(c.settings, "start_run", row.account_id, request.timeout_s).__aenter__()
    events = c.sessions.run_stream(row.id, row.account_id, request, received)
    try:
        try:
            first = await anext(events)  # raises our errors (closed, no compute) before any byte
        except Moved:  # the cached host had hibernated: the router forgot it, look it up again
            events = c.sessions.run_stream(row.id, row.account_id, request, received)
            first = await anext(events)
    except BaseException:
        await slot.release()
        raise
    open_ms = (time.time() - received) * 1000.0
    provider = first.provider if isinstance(first, StreamStarted) else None
    headers = {
        "X-Cerver-Session-Id": row.id,
        "X-Cerver-Provider": str(provider),
        "X-Cerver-Stream-Latency-Ms": f"{open_ms:.3f}",
        "Cache-Control": "no-store",
    }

    async def sse() -> AsyncIterator[bytes]:
        try:
            async for event in events:
                yield _sse(session_event_wire(event))
        except CerverError as exc:
            yield f"event: error\ndata: {json.dumps(exc.to_body())}\n\n".encode()
        finally:
            await events.aclose()
            await slot.release()

    return StreamingResponse(sse(), media_type="text/event-stream", headers=headers)


def _sse(event: dict[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()
