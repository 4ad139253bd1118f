"""What the HTTP provider fakes offer tests besides the provider's own protocol, under
``/_fake`` (never part of a real API):

    GET  /_fake/requests        what was received, in order (each fake says which fields)
    POST /_fake/faults          {path, status, count?, retry_after?}: answer the next
                                ``count`` requests whose path contains ``path`` with
                                ``status`` (in the provider's own error shape)
    POST /_fake/reject          {key, undo?}: revoke a key, or restore it
    POST /_fake/vanish/{ref}    the sandbox disappears, as when deleted in the console
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response


@dataclass
class Fault:
    path: str
    status: int
    count: int
    retry_after: int | None = None


class Controls:
    """A fake's received requests, injected faults and refused keys."""

    def __init__(self, reject_keys: tuple[str, ...] = ()) -> None:
        self.reject_keys = set(reject_keys)
        self.requests: list[dict[str, Any]] = []
        self.faults: list[Fault] = []

    def take_fault(self, path: str) -> Fault | None:
        """The injected fault this request meets (one of its ``count`` used), if any."""
        for fault in self.faults:
            if fault.path in path and fault.count > 0:
                fault.count -= 1
                return fault
        return None

    def add_control_routes(self, app: FastAPI, vanish: Callable[[str], Awaitable[bool]]) -> None:
        @app.get("/_fake/requests")
        async def received() -> Response:
            return JSONResponse(self.requests)

        @app.post("/_fake/faults")
        async def inject(request: Request) -> Response:
            body = await request.json()
            fault = Fault(
                path=str(body.get("path", "")),
                status=int(body["status"]),
                count=int(body.get("count", 1)),
                retry_after=body.get("retry_after"),
            )
            self.faults.append(fault)
            return JSONResponse({"faults": len(self.faults)})

        @app.post("/_fake/reject")
        async def reject(request: Request) -> Response:
            body = await request.json()
            if body.get("undo"):
                self.reject_keys.discard(body["key"])
            else:
                self.reject_keys.add(body["key"])
            return JSONResponse({"rejected": len(self.reject_keys)})

        @app.post("/_fake/vanish/{ref}")
        async def vanished(ref: str) -> Response:
            return JSONResponse({"vanished": await vanish(ref)})
