"""Dashboard pages: sign in and out, sessions, one session with its live transcript.

The account pages (computes, tokens, providers, compare) are in ``pages_account.py``.
``install(app)`` mounts both routers, the vendored static files and the two redirects
(no browser session -> 303 to the sign-in form; a missing CSRF token -> 403).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from cerver.dashboard import auth, charts
from cerver.dashboard.render import HERE, templates
from cerver.errors import CerverError
from cerver.metrics import MetricsState
from cerver.serve_app.deps import AppContext, ctx
from cerver.serve_app.views import decode_cursor, encode_cursor, metrics_of, session_view
from cerver.store.browser_sessions import BrowserSession

router = APIRouter(prefix="/dashboard", include_in_schema=False)

PAGE_SIZE = 25
TRANSCRIPT_PAGE = 200  # entries shown on a session page; older ones through ?before=
STATUSES = ("ready", "running", "hibernated", "closed")


async def signed_in(request: Request, c: AppContext = Depends(ctx)) -> BrowserSession:
    return await auth.current(request, c.store)


async def changing(request: Request, who: BrowserSession = Depends(signed_in)) -> BrowserSession:
    """A signed-in request that changes something: it must carry the CSRF token."""
    await auth.check_csrf(request, who)
    return who


def page(
    request: Request, name: str, who: BrowserSession | None, code: int = 200, **data: Any
) -> HTMLResponse:
    """Render one template with the signed-in account and its CSRF token."""
    response: HTMLResponse = templates.TemplateResponse(
        request,
        name,
        {"who": who, "csrf": who.csrf_token if who else None, **data},
        status_code=code,
    )
    return response


def failed(exc: CerverError) -> dict[str, Any]:
    """A page's status and alert for one of our errors: the API's status and the message a
    client may see (scrubbed, as in the API's error body)."""
    return {"code": exc.status, "error": exc.to_body()["error"]["message"]}


@router.get("")
async def home() -> RedirectResponse:
    return RedirectResponse("/dashboard/sessions", status_code=303)


@router.get("/login")
async def login_form(request: Request) -> HTMLResponse:
    return page(request, "login.html", None)


@router.post("/login")
async def login(
    request: Request, token: str = Form("", alias="token"), c: AppContext = Depends(ctx)
) -> Response:
    if not auth.same_origin(request):
        return page(request, "login.html", None, 403, error="Sign-in from another site refused.")
    account = (
        await asyncio.to_thread(c.store.accounts.authenticate, token.strip())
        if token.strip()
        else None
    )
    if account is None:
        return page(request, "login.html", None, 401, error="That API token is not valid.")
    lifetime = c.settings.dashboard_session_hours * 3600.0
    session_id, _csrf = await asyncio.to_thread(
        c.store.browser_sessions.start, account.id, lifetime
    )
    response = RedirectResponse("/dashboard/sessions", status_code=303)
    response.set_cookie(
        auth.COOKIE,
        session_id,
        max_age=int(lifetime),
        path="/dashboard",
        httponly=True,
        samesite="strict",
        secure=auth.is_https(request, c.settings),
    )
    return response


@router.post("/logout")
async def logout(
    request: Request, _who: BrowserSession = Depends(changing), c: AppContext = Depends(ctx)
) -> RedirectResponse:
    await asyncio.to_thread(c.store.browser_sessions.end, request.cookies[auth.COOKIE])
    response = RedirectResponse("/dashboard/login", status_code=303)
    response.delete_cookie(auth.COOKIE, path="/dashboard")
    return response


@router.get("/sessions")
async def sessions(
    request: Request,
    q: str = Query("", max_length=200),
    status: str = Query(""),
    provider: str = Query(""),
    cursor: str | None = None,
    who: BrowserSession = Depends(signed_in),
    c: AppContext = Depends(ctx),
) -> HTMLResponse:
    started = time.perf_counter()
    rows = await asyncio.to_thread(
        c.store.sessions.page,
        who.account.id,
        limit=PAGE_SIZE + 1,
        before=decode_cursor(cursor) if cursor else None,
        name_contains=q or None,
        status=status or None,
        provider=provider or None,
    )
    shown = rows[:PAGE_SIZE]
    items = [
        {
            "row": r,
            "metrics": metrics_of(r),
            "llm_turns": int((r.metrics or {}).get("llm_turn_count", 0) or 0),
        }
        for r in shown
    ]
    response = page(
        request,
        "sessions.html",
        who,
        items=items,
        q=q,
        status=status,
        provider=provider,
        statuses=STATUSES,
        next_cursor=encode_cursor(shown[-1]) if len(rows) > PAGE_SIZE else None,
    )
    response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.2f}"
    return response


async def _owned(c: AppContext, who: BrowserSession, session_id: str):  # type: ignore[no-untyped-def]
    row = await asyncio.to_thread(c.store.sessions.get, session_id, who.account.id)
    return row


@router.get("/sessions/{session_id}")
async def one_session(
    request: Request,
    session_id: str,
    who: BrowserSession = Depends(signed_in),
    c: AppContext = Depends(ctx),
) -> HTMLResponse:
    row = await _owned(c, who, session_id)
    if row is None:
        return page(request, "not_found.html", who, 404, what=f"session {session_id}")
    store = c.store
    entries = await asyncio.to_thread(store.sessions.transcript, row.id, tail=TRANSCRIPT_PAGE)
    every = await asyncio.to_thread(
        store.sessions.transcript, row.id, limit=c.settings.transcript_full_max_entries
    )
    compute = (
        await asyncio.to_thread(store.computes.get, row.compute_id) if row.compute_id else None
    )
    view = session_view(row, compute)
    now = row.closed_at or time.time()
    return page(
        request,
        "session.html",
        who,
        view=view,
        metrics=view.metrics.model_dump(),
        raw_metrics=row.metrics or {},
        entries=entries,
        since=entries[-1].seq if entries else 0,
        live=row.status != "closed",
        latency=charts.exec_latency(every),
        costs=charts.cost_by_source(MetricsState.load(row.metrics), every, now),
    )


@router.get("/sessions/{session_id}/tail")
async def tail(
    request: Request,
    session_id: str,
    since: int = Query(0, ge=0),
    who: BrowserSession = Depends(signed_in),
    c: AppContext = Depends(ctx),
) -> HTMLResponse:
    """New transcript entries after ``since`` and the poller that asks for the next ones
    (htmx swaps this whole fragment in place of the old poller)."""
    row = await _owned(c, who, session_id)
    if row is None:
        return page(request, "not_found.html", who, 404, what=f"session {session_id}")
    entries = await asyncio.to_thread(
        c.store.sessions.transcript, row.id, since=since, limit=TRANSCRIPT_PAGE
    )
    return page(
        request,
        "_tail.html",
        who,
        view={"session_id": row.id},
        entries=entries,
        since=entries[-1].seq if entries else since,
        live=row.status != "closed" or bool(entries),
    )


def install(app: FastAPI) -> None:
    from cerver.dashboard import pages_account

    app.include_router(router)
    app.include_router(pages_account.router)
    app.mount(
        "/dashboard/static", StaticFiles(directory=str(HERE / "static")), name="dashboard-static"
    )

    @app.exception_handler(auth.SignInRequired)
    async def _sign_in(_request: Request, _exc: auth.SignInRequired) -> RedirectResponse:
        return RedirectResponse("/dashboard/login", status_code=303)

    @app.exception_handler(auth.CsrfRefused)
    async def _csrf(request: Request, _exc: auth.CsrfRefused) -> HTMLResponse:
        return page(request, "forbidden.html", None, 403)
