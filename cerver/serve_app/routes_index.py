"""`GET /`: what this server is and which endpoints it has, as the original Cerver API
answered (`{"name": "Cerver API", "endpoints": [...]}`). Public: it says nothing an
account owns. The list is read from the app's own OpenAPI schema, so it cannot go stale."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from cerver import __version__

router = APIRouter(tags=["meta"])


@router.get("/")
async def index(request: Request) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = request.app.openapi().get("paths", {})
    endpoints = [
        f"{method.upper()} {path}"
        for path, operations in paths.items()
        if path != "/" and not path.startswith("/dashboard")
        for method in operations
    ]
    return {"name": "Cerver API", "version": __version__, "docs": "/docs", "endpoints": endpoints}
