"""What a route needs from the replica: settings, the store, the actor callers, the caller's
account."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from cerver.actors.router import SessionRouter
from cerver.actors.sandbox_directory import SandboxDirectory
from cerver.config import Settings
from cerver.errors import Unauthorized
from cerver.llm.service import LlmService
from cerver.serve_app.timing import span
from cerver.store import Account, Store
from cerver.store.accounts import hash_token


@dataclass
class AppContext:
    """Built once per replica (``serve_app/app.py: build_app``)."""

    settings: Settings
    store: Store
    sessions: SessionRouter  # reaches the host of a session (actors/session.py)
    sandboxes: SandboxDirectory  # reaches the actor of a /sandbox compute (actors/sandbox.py)
    llm: LlmService | None = None  # model turns (cerver/llm), made on first use
    relay_hub: Any = None  # the RelayHub actor handle (cerver/relay/hub.py), made on first use


def ctx(request: Request) -> AppContext:
    context: AppContext = request.app.state.ctx
    return context


def wants_stream(flag: bool, request: Request) -> bool:
    """A run is streamed (Server-Sent Events) when the body says ``"stream": true`` or the
    client asks for ``Accept: text/event-stream``, as SSE clients do."""
    return flag or "text/event-stream" in request.headers.get("accept", "").lower()


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def optional_account(request: Request) -> Account | None:
    token = _bearer(request)
    if token is None:
        return None
    return await _authenticate(request, token)


async def account(request: Request) -> Account:
    token = _bearer(request)
    if token is None:
        raise Unauthorized("missing bearer token: send 'Authorization: Bearer <CERVER_API_TOKEN>'")
    return await _authenticate(request, token)


# Valid tokens are remembered per replica for a moment, so a burst of calls does one store
# lookup; a revoked token stops working within AUTH_CACHE_S. Keyed by the token's hash.
AUTH_CACHE_S = 2.0
_AUTH_CACHE_MAX = 10_000
_auth_cache: dict[str, tuple[Account, float]] = {}


async def _authenticate(request: Request, token: str) -> Account:
    with span(request, "auth"):
        return await _authenticate_untimed(request, token)


async def _authenticate_untimed(request: Request, token: str) -> Account:
    key = hash_token(token)
    cached = _auth_cache.get(key)
    now = time.monotonic()
    if cached is not None and cached[1] > now:
        return cached[0]
    found = await asyncio.to_thread(ctx(request).store.accounts.authenticate, token)
    if found is None:
        _auth_cache.pop(key, None)
        raise Unauthorized("invalid or revoked token: create one with 'cerver token create'")
    if len(_auth_cache) >= _AUTH_CACHE_MAX:
        _auth_cache.clear()
    _auth_cache[key] = (found, now + AUTH_CACHE_S)
    return found
