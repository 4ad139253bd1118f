"""CORS for the token-authenticated API, as plain ASGI middleware, path-aware.

Every API response carries ``Access-Control-Allow-Origin: *`` and never
``Access-Control-Allow-Credentials``: the API authenticates with a bearer token the page
itself sends, so another origin gains nothing a script could not do with that token. An
``OPTIONS`` request is answered here with 204 and the allowed methods and headers, as the
original Cerver API did (its clients send preflights without an ``Origin`` too).

Paths under one of ``closed_prefixes`` (the dashboard, which authenticates with a cookie)
pass through untouched: no CORS header, no preflight answer, so no other origin can ever
read them with the browser's cookie.

Why not Starlette's ``CORSMiddleware``: it adds nothing to a request without an ``Origin``
header (the original API answered ``*`` to every request) and applies to every path alike.
"""

from __future__ import annotations

from typing import Any

Scope = dict[str, Any]

ALLOW_METHODS = b"GET, POST, PUT, PATCH, DELETE, OPTIONS"
ALLOW_HEADERS = b"Authorization, Content-Type, Accept, Last-Event-ID"
EXPOSE_HEADERS = b"Retry-After, X-Cerver-Provider, X-Cerver-Replica"
PREFLIGHT_MAX_AGE = b"600"


class OpenCors:
    """``Access-Control-Allow-Origin: *`` everywhere except under ``closed_prefixes``."""

    def __init__(self, app: Any, closed_prefixes: tuple[str, ...] = ("/dashboard",)) -> None:
        self.app = app
        self.closed_prefixes = closed_prefixes

    def is_closed(self, path: str) -> bool:
        return any(path == p or path.startswith(p + "/") for p in self.closed_prefixes)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or self.is_closed(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        if scope.get("method") == "OPTIONS":
            await self._preflight(send)
            return

        async def with_origin(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if k.lower() != b"access-control-allow-origin"
                ]
                headers.append((b"access-control-allow-origin", b"*"))
                headers.append((b"access-control-expose-headers", EXPOSE_HEADERS))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_origin)

    async def _preflight(self, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 204,
                "headers": [
                    (b"access-control-allow-origin", b"*"),
                    (b"access-control-allow-methods", ALLOW_METHODS),
                    (b"access-control-allow-headers", ALLOW_HEADERS),
                    (b"access-control-max-age", PREFLIGHT_MAX_AGE),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b""})
