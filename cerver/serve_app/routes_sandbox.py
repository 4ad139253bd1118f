"""The lower-level compute API, `/sandbox`: one endpoint per contract operation.

These routes answer as the original Cerver API did (docs/sandbox-api.md, "Compatibility with
the original API"): `POST /sandbox` -> 200 with `sandbox_id` and `"status": "ready"`;
`POST /sandbox/{id}/run` {code, timeout} -> output (without trailing newlines), error (a
string, never null), exit_code, duration (integer ms); empty `code` is a 400;
`POST /sandbox/{id}/install` {package} -> success. A sandbox is a compute like any other: it
shows in GET /v2/computes and a session can adopt it with {"compute_id"}.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import Field, field_validator

from cerver.actors.account_limits import Admission
from cerver.adapters.base import ExecRequest, InstallRequest, Language, check_env
from cerver.adapters.egress_allow import NetworkChoice
from cerver.errors import (
    BadRequest,
    CerverError,
    Conflict,
    NotFound,
    PayloadTooLarge,
    Unprocessable,
)
from cerver.models import ComputeChoice, Strict
from cerver.serve_app.compute_choice import check_choice
from cerver.serve_app.deps import AppContext, account, ctx, wants_stream
from cerver.serve_app.errors import ERROR_RESPONSES
from cerver.store import Account, ComputeRow
from cerver.store.ids import new_id

router = APIRouter(tags=["sandbox (lower-level compute API)"], responses=ERROR_RESPONSES)


class CreateSandbox(Strict):
    provider: str = "local"
    runtime: Language = "python"
    env: dict[str, str] = Field(default_factory=dict)
    network: NetworkChoice = False

    _env = field_validator("env")(check_env)


class SandboxRun(Strict):
    code: str  # empty is refused in the route with a 400, as the original API did
    timeout: float | None = Field(default=None, gt=0)
    language: Language = "python"
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None
    stream: bool = False

    _env = field_validator("env")(check_env)


class SandboxInstall(Strict):
    package: str = Field(min_length=1, max_length=200)
    manager: Literal["pip", "npm"] = "pip"


class SandboxStateBody(Strict):
    state: dict[str, Any]


async def owned_compute(c: AppContext, who: Account, sandbox_id: str) -> ComputeRow:
    """The caller's compute named by ``sandbox_id``: its compute id (``cmp_...``, what
    ``POST /sandbox`` answers) or its sandbox id (``sbx_...``, what a session shows)."""
    row = await asyncio.to_thread(c.store.computes.find, sandbox_id, who.id)
    if row is None:
        raise NotFound(f"sandbox {sandbox_id} not found; create one with POST /sandbox")
    if row.status == "released":
        raise NotFound(f"sandbox {sandbox_id} was deleted; create a new one with POST /sandbox")
    return row


async def unattached_compute(c: AppContext, who: Account, sandbox_id: str) -> ComputeRow:
    """A compute this account may drive through /sandbox: once a session has adopted it,
    the session's host owns it (no /sandbox host actor is started for it again)."""
    row = await owned_compute(c, who, sandbox_id)
    if row.session_id is not None:
        raise Conflict(
            f"sandbox {sandbox_id} is attached to session {row.session_id}; use "
            f"/v2/sessions/{row.session_id}/run",
            details={"session_id": row.session_id},
        )
    return row


def _describe(row: ComputeRow) -> dict[str, Any]:
    record = row.record or {}
    return {
        "sandbox_id": row.id,
        "compute_id": row.id,
        "provider": row.provider,
        "status": row.status,  # "ready" once created, as the original API answered
        "runtime": record.get("runtime"),
        "isolation": record.get("isolation"),
        "session_id": row.session_id,
        "provision_time_ms": row.provision_time_ms,
        "created_at": row.created_at,
    }


@router.post("/sandbox")  # 200, not 201: the original API's status
async def create_sandbox(
    body: CreateSandbox | None = None,
    who: Account = Depends(account),
    c: AppContext = Depends(ctx),
) -> dict[str, Any]:
    body = body or CreateSandbox()
    choice = ComputeChoice(
        provider=body.provider, runtime=body.runtime, env=body.env, network=body.network
    )
    await check_choice(c, who, choice)
    compute_id = new_id("cmp")
    try:
        await c.sandboxes.create(compute_id, who.id, choice, body.runtime)
    except BaseException:
        await c.sandboxes.kill(compute_id)
        raise
    return _describe(await owned_compute(c, who, compute_id))


@router.get("/sandbox/{sandbox_id}")
async def get_sandbox(
    sandbox_id: str, who: Account = Depends(account), c: AppContext = Depends(ctx)
) -> dict[str, Any]:
    return _describe(await owned_compute(c, who, sandbox_id))


def _exec_request(c: AppContext, body: SandboxRun) -> ExecRequest:
    if not body.code:
        raise BadRequest(
            'code is empty; send the program to run in "code"', details={"field": "code"}
        )
    timeout = body.timeout if body.timeout is not None else c.settings.run_timeout_s
    if timeout > c.settings.max_run_timeout_s:
        raise Unprocessable(
            f"timeout {timeout}s is above this server's maximum of "
            f"{c.settings.max_run_timeout_s}s; lower it",
            details={"field": "timeout", "max": c.settings.max_run_timeout_s},
        )
    return ExecRequest(
        code=body.code, language=body.language, timeout_s=timeout, env=body.env, cwd=body.cwd
    )


RUN_CONTENT: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the run's result, or with `stream: true` its events (SSE)",
        "content": {"application/json": {}, "text/event-stream": {}},
    }
}


@router.post("/sandbox/{sandbox_id}/run", response_model=None, responses=RUN_CONTENT)
async def run(
    sandbox_id: str,
    body: SandboxRun,
    http: Request,
    who: Account = Depends(account),
    c: AppContext = Depends(ctx),
) -> Any:
    request = _exec_request(c, body)
    row = await unattached_compute(c, who, sandbox_id)
    if wants_stream(body.stream, http):
        return await _stream(c, row, request)
    async with run_slot(c, who.id, request.timeout_s):
        result = await c.sandboxes.run(row.id, who.id, request)
    error = result.stderr
    if result.error and result.error not in error:
        error = f"{error}{result.error}"
    return {
        # The contract's fields...
        **result.model_dump(),
        "traceback": result.error,
        # ...and the original API's: `error` is a string, never null; `output` has its
        # trailing newlines stripped; `duration` is whole milliseconds, rounded up.
        "output": result.stdout.rstrip("\n"),
        "error": error,
        "duration": math.ceil(result.duration_ms),
        "sandbox_id": sandbox_id,
        "provider": row.provider,
    }


def run_slot(c: AppContext, account_id: str, timeout_s: float) -> Admission:
    """One of the account's concurrent-run slots for the block (429 when none is free)."""
    return Admission(c.settings, "start_run", account_id, timeout_s)


async def _stream(c: AppContext, row: ComputeRow, request: ExecRequest) -> StreamingResponse:
    slot = await run_slot(c, row.account_id, request.timeout_s).__aenter__()
    events = c.sandboxes.run_stream(row.id, row.account_id, request)

    async def sse() -> AsyncIterator[bytes]:
        try:
            async for event in events:
                data = json.dumps(event.model_dump(exclude_none=True))
                yield f"event: {event.type}\ndata: {data}\n\n".encode()
        except CerverError as exc:
            yield f"event: error\ndata: {json.dumps(exc.to_body())}\n\n".encode()
        finally:
            await events.aclose()
            await slot.release()

    headers = {"X-Cerver-Provider": row.provider, "Cache-Control": "no-store"}
    return StreamingResponse(sse(), media_type="text/event-stream", headers=headers)


@router.post("/sandbox/{sandbox_id}/install")
async def install(
    sandbox_id: str,
    body: SandboxInstall,
    who: Account = Depends(account),
    c: AppContext = Depends(ctx),
) -> dict[str, Any]:
    row = await unattached_compute(c, who, sandbox_id)
    request = InstallRequest(package=body.package, manager=body.manager)
    async with run_slot(c, who.id, request.timeout_s):
        result = await c.sandboxes.install(row.id, who.id, request)
    return result.model_dump()


@router.put("/sandbox/{sandbox_id}/files")
async def write_file(
    sandbox_id: str,
    request: Request,
    path: str = Query(..., min_length=1, description="Path relative to the workspace"),
    who: Account = Depends(account),
    c: AppContext = Depends(ctx),
) -> dict[str, Any]:
    row = await unattached_compute(c, who, sandbox_id)
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > c.settings.max_file_bytes:
            raise PayloadTooLarge(
                f"file is larger than {c.settings.max_file_bytes} bytes; split it or raise "
                "CERVER_MAX_FILE_BYTES",
                details={"max_bytes": c.settings.max_file_bytes},
            )
    await c.sandboxes.write_file(row.id, who.id, path, bytes(data))
    return {"path": path, "size": len(data)}


@router.get(
    "/sandbox/{sandbox_id}/files",
    response_class=Response,
    responses={
        200: {"description": "the file's bytes", "content": {"application/octet-stream": {}}}
    },
)
async def read_file(
    sandbox_id: str,
    path: str = Query(..., min_length=1, description="Path relative to the workspace"),
    who: Account = Depends(account),
    c: AppContext = Depends(ctx),
) -> Response:
    row = await unattached_compute(c, who, sandbox_id)
    data = await c.sandboxes.read_file(row.id, who.id, path)
    return Response(content=data, media_type="application/octet-stream")


@router.get("/sandbox/{sandbox_id}/state")
async def get_state(
    sandbox_id: str, who: Account = Depends(account), c: AppContext = Depends(ctx)
) -> dict[str, Any]:
    row = await unattached_compute(c, who, sandbox_id)
    return (await c.sandboxes.get_state(row.id, who.id)).model_dump()


@router.put("/sandbox/{sandbox_id}/state")
async def set_state(
    sandbox_id: str,
    body: SandboxStateBody,
    who: Account = Depends(account),
    c: AppContext = Depends(ctx),
) -> dict[str, Any]:
    row = await unattached_compute(c, who, sandbox_id)
    return (await c.sandboxes.set_state(row.id, who.id, body.state)).model_dump()


@router.delete("/sandbox/{sandbox_id}")
async def delete_sandbox(
    sandbox_id: str, who: Account = Depends(account), c: AppContext = Depends(ctx)
) -> dict[str, Any]:
    row = await asyncio.to_thread(c.store.computes.find, sandbox_id, who.id)
    if row is None:
        raise NotFound(f"sandbox {sandbox_id} not found")
    if row.session_id is not None:
        raise Conflict(
            f"sandbox {sandbox_id} is attached to session {row.session_id}; close that session "
            "or swap its compute first"
        )
    if row.status != "released":
        await c.sandboxes.delete(row.id, who.id)
    await c.sandboxes.kill(row.id)
    return {"sandbox_id": sandbox_id, "deleted": True}
