"""/v2/account/providers: register, list and remove an account's provider credentials.

Responses carry provider names, field names and times, never a value. Registering again
rotates. Removing a provider that live sessions run on answers 409 listing them, unless
``?force=1``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict

from cerver import provider_credentials
from cerver.errors import Conflict, NotFound
from cerver.serve_app.deps import AppContext, account, ctx
from cerver.store import Account

router = APIRouter(prefix="/v2/account/providers", tags=["providers"])
log = logging.getLogger("cerver.providers")


class RegisterProvider(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    provider: str
    # Checked field by field in cerver.provider_credentials (messages name fields only).
    credentials: Any

    def __repr__(self) -> str:
        return f"RegisterProvider(provider={self.provider!r}, credentials=<hidden>)"

    __str__ = __repr__


@router.post("", status_code=201)
async def register_provider(
    body: RegisterProvider, who: Account = Depends(account), c: AppContext = Depends(ctx)
) -> dict[str, Any]:
    fields = await provider_credentials.register(
        c.settings, c.store, who.id, body.provider, body.credentials
    )
    log.info("account %s registered %s credentials (fields %s)", who.id, body.provider, fields)
    listed = await asyncio.to_thread(provider_credentials.describe, c.store, who.id)
    return next(p for p in listed if p["provider"] == body.provider)


@router.get("")
async def list_providers(
    who: Account = Depends(account), c: AppContext = Depends(ctx)
) -> dict[str, Any]:
    listed = await asyncio.to_thread(provider_credentials.describe, c.store, who.id)
    return {"providers": listed}


@router.delete("/{provider}")
async def delete_provider(
    provider: str,
    force: bool = False,
    who: Account = Depends(account),
    c: AppContext = Depends(ctx),
) -> dict[str, Any]:
    provider_credentials.schema_for(provider)  # unknown: 400 listing the valid ones
    if await asyncio.to_thread(c.store.credentials.get, who.id, provider) is None:
        raise NotFound(f"no {provider} credentials registered; list them with GET {router.prefix}")
    computes = await asyncio.to_thread(c.store.computes.for_account, who.id)
    live = sorted({r.session_id for r in computes if r.provider == provider and r.session_id})
    if live and not force:
        raise Conflict(
            f"{len(live)} live session(s) run on {provider}: {', '.join(live)}; close or "
            f"swap them first, or delete with ?force=1 (their next call will fail)",
            details={"provider": provider, "sessions": live},
        )
    await asyncio.to_thread(c.store.credentials.delete, who.id, provider)
    return {"provider": provider, "deleted": True, "live_sessions": live}
