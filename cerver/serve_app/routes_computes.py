"""GET /v2/computes: the account's computes, and the providers it can execute on here."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Depends

from cerver.adapters.access import executable_providers
from cerver.serve_app.deps import AppContext, account, ctx
from cerver.serve_app.errors import ERROR_RESPONSES
from cerver.store import Account, ComputeRow
from cerver.store.computes import HOST_STATUSES

router = APIRouter(tags=["computes"], responses=ERROR_RESPONSES)


def host_fields(row: ComputeRow, timeout_s: float) -> dict[str, Any]:
    """What a host compute (a relay machine) adds: its machine and when it was last heard.
    A host whose gateway died without saying so shows ``offline`` once it is stale."""
    if row.status not in HOST_STATUSES:
        return {}
    record = row.record or {}
    last_seen = record.get("last_seen")
    stale = last_seen is None or time.time() - float(last_seen) > timeout_s
    host = record.get("host") or {}
    return {
        "status": "offline" if stale else row.status,
        "last_seen": last_seen,
        "host_name": host.get("hostname"),
        "os": host.get("os"),
        "cpu_count": host.get("cpu_count"),
        "memory_mb": host.get("memory_mb"),
        "max_concurrent_runs": host.get("max_concurrent_runs"),
        "network_allowed": host.get("network_allowed"),
    }


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
                **host_fields(r, c.settings.relay_heartbeat_timeout_s),
            }
            for r in rows
        ],
        "executable_providers": sorted(usable),
    }
