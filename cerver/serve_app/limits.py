"""Request body size limit as plain ASGI middleware: a declared Content-Length above the limit
is refused before reading; an undeclared (chunked) body is counted while it streams."""

from __future__ import annotations

import json
from typing import Any

Scope = dict[str, Any]


class BodyLimit:
    """``max_bytes`` for every body, except paths ending in one of ``large_suffixes`` (file
    uploads), which may carry up to ``large_bytes`` (their route enforces its own limit)."""

    def __init__(
        self,
        app: Any,
        max_bytes: int,
        large_bytes: int = 0,
        large_suffixes: tuple[str, ...] = (),
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.large_bytes = max(large_bytes, max_bytes)
        self.large_suffixes = large_suffixes

    def _limit(self, path: str) -> int:
        return self.large_bytes if path.endswith(self.large_suffixes) else self.max_bytes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit(scope.get("path", ""))
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._refuse(send, limit)
            return
        seen = 0
        refused = False

        async def counted() -> Any:
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    refused = True
                    raise _TooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await self._refuse(send, limit)
        except Exception:
            if refused:
                await self._refuse(send, limit)
                return
            raise

    async def _refuse(self, send: Any, limit: int) -> None:
        body = json.dumps(
            {
                "error": {
                    "code": "payload_too_large",
                    "message": f"request body is larger than {limit} bytes; send less "
                    "(large files go through PUT /sandbox/{id}/files)",
                    "details": {"max_bytes": limit},
                }
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass
