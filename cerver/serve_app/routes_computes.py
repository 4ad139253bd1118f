"""GET /v2/computes: the account's computes, and the providers it can execute on here."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends

from cerver.adapters.access import executable_providers
from cerver.serve_app.deps import AppContext, account, ctx
from cerver.serve_app.errors import ERROR_RESPONSES
from cerver.store import Account

router = APIRouter(tags=["computes"], responses=ERROR_RESPONSES)


@router.get("/v2/computes")
async def list_computes(
    include_released: bool = False,
    who: Account = Depends(account),
    c: AppContext = Depends(ctx),
) -> dict[str, Any]:
    rows = await asyncio.to_thread(
        c.store.computes.for_account, who.id, include_released=include_released
    )
    usable = await executable_providers(c.settings, c.store, who.id)
    return {
        "computes": [
            {
                "compute_id": r.id,
                "provider": r.provider,
                "status": r.status,
                "session_id": r.session_id,
                "sandbox_id": (r.record or {}).get("sandbox_id"),
                "isolation": (r.record or {}).get("isolation"),
                "created_at": r.created_at,
                "released_at": r.released_at,
                "provision_time_ms": r.provision_time_ms,
            }
            for r in rows
        ],
        "executable_providers": sorted(usable),
    }
