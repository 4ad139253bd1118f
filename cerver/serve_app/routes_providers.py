"""/v2/account/providers: register, list and remove an account's provider credentials.

Responses carry provider names, field names, declared models (``openai-compatible``) and
times, never a value. Registering again
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
from cerver.serve_app.deps import AppContext, account, ctx
from cerver.serve_app.errors import ERROR_RESPONSES
from cerver.store import Account

router = APIRouter(prefix="/v2/account/providers", tags=["providers"], responses=ERROR_RESPONSES)
log = logging.getLogger("cerver.providers")


class RegisterProvider(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    provider: str
    # Checked field by field in cerver.provider_credentials (messages name fields only).
    credentials: Any
    # openai-compatible only: the model names its endpoint serves (checked there too).
    models: Any = None

    def __repr__(self) -> str:
        return f"RegisterProvider(provider={self.provider!r}, credentials=<hidden>)"

    __str__ = __repr__


@router.post("", status_code=201)
async def register_provider(
    body: RegisterProvider, who: Account = Depends(account), c: AppContext = Depends(ctx)
) -> dict[str, Any]:
    fields = await provider_credentials.register(
        c.settings, c.store, who.id, body.provider, body.credentials, body.models
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
    live = await provider_credentials.remove(c.store, who.id, provider, force=force)
    return {"provider": provider, "deleted": True, "live_sessions": live}
