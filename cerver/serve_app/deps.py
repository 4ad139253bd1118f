"""What a route needs from the replica: settings, the store, the caller's account."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from cerver.config import Settings
from cerver.errors import Unauthorized
from cerver.store import Account, Store


@dataclass
class AppContext:
    settings: Settings
    store: Store
    extras: dict[str, Any] = field(default_factory=dict)


def ctx(request: Request) -> AppContext:
    context: AppContext = request.app.state.ctx
    return context


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


async def _authenticate(request: Request, token: str) -> Account:
    import asyncio

    found = await asyncio.to_thread(ctx(request).store.accounts.authenticate, token)
    if found is None:
        raise Unauthorized("invalid or revoked token: create one with 'cerver token create'")
    return found
