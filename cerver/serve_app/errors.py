"""One JSON error shape for every failure: {"error": {"code", "message", "details"}}."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from cerver.errors import CerverError, RateLimited

log = logging.getLogger("cerver.http")


def error_response(status: int, code: str, message: str, details: Any = None) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=status)


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts) or "body"


async def on_cerver_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CerverError)
    if exc.status >= 500:  # the log keeps what the client's copy leaves out (cerver.scrub)
        log.warning(
            "%s %s: %s (details: %s)",
            exc.status,
            exc.code,
            exc.message,
            exc.details,
            exc_info=exc.__cause__,
        )
    response = JSONResponse(exc.to_body(), status_code=exc.status)
    if isinstance(exc, RateLimited):
        response.headers["Retry-After"] = str(max(1, round(exc.retry_after_s)))
    return response


async def on_validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        detail = errors[0].get("ctx", {}).get("error", "")
        return error_response(
            400, "bad_request", f"malformed JSON body: {detail}".rstrip(": "), None
        )
    fields = [
        {"field": _field(e.get("loc", ())), "message": e.get("msg", ""), "type": e.get("type")}
        for e in errors
    ]
    summary = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
    return error_response(422, "validation_error", f"invalid request: {summary}", fields)


async def on_http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    codes = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
    message = str(exc.detail)
    if exc.status_code == 404:
        message = "no such endpoint; see /docs for the API"
    return error_response(exc.status_code, codes.get(exc.status_code, "http_error"), message)


async def on_unexpected(_request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return error_response(500, "internal", "internal error; the server log has the details")


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorResponse(BaseModel):
    """The one error shape, as OpenAPI declares it for every operation."""

    error: ErrorDetail


# What any operation may answer besides its success (declared so that clients, and the
# schema fuzzing in tests/integration/test_api_fuzz.py, can rely on the OpenAPI document).
ERROR_STATUSES = {
    400: "bad request (malformed JSON, a bad path, an unknown provider)",
    401: "missing, invalid or revoked token",
    402: "the account's LLM budget is spent",
    404: "not found (another account's ids answer 404 too)",
    409: "conflict with the entity's state (closed, attached, compute unavailable)",
    413: "request body too large",
    422: "the request does not validate; details name each field",
    429: "rate limited, overloaded, or an account cap reached (see Retry-After)",
    502: "the compute provider failed",
    503: "the host of the entity restarted; retry",
}


# Every router passes these as ``APIRouter(responses=...)``: declared on the routes
# themselves, they survive Serve's rebuilding of the app's routes.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text} for status, text in ERROR_STATUSES.items()
}


def install(app: FastAPI) -> None:
    app.add_exception_handler(CerverError, on_cerver_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
