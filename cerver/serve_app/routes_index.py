"""`GET /`: what this server is and which endpoints it has, as the original Cerver API
answered (`{"name": "Cerver API", "endpoints": [...]}`). Public: it says nothing an
account owns. The list is read from the app's own routes, so it cannot go stale."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.routing import APIRoute

from cerver import __version__

router = APIRouter(tags=["meta"])


@router.get("/")
async def index(request: Request) -> dict[str, Any]:
    endpoints = [
        f"{method} {route.path}"
        for route in request.app.routes
        if isinstance(route, APIRoute)
        and route.include_in_schema
        and route.path != "/"
        and not route.path.startswith("/dashboard")
        for method in sorted(route.methods or ())
    ]
    return {"name": "Cerver API", "version": __version__, "docs": "/docs", "endpoints": endpoints}
