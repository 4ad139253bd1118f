"""The one place where an account's credentials for a provider are turned into values.

Called each time an adapter handle is needed (provisioning, and every later operation on
the sandbox), so a rotated secret takes effect at the next call. The values go to the
adapter only: they are never stored in a sandbox record, the store, a log, a transcript or
a response.
"""

from __future__ import annotations

import asyncio

from cerver import secrets
from cerver.config import Settings
from cerver.store import Store


async def credentials_for(
    settings: Settings, store: Store, account_id: str, provider: str
) -> dict[str, str]:
    """The resolved credentials of ``account_id`` for ``provider`` (``{}`` when it has none).

    Today: the account's stored *references* (``store.credentials.refs``) resolved by the
    secrets backend (``cerver.secrets.resolve``), which raises ``ComputeUnavailable`` (409)
    naming what is missing. What is read, and from where, may change here (encrypted
    values, a backend allowlist) without touching any caller. The store is read in a worker
    thread, never on the event loop. ``settings`` is for that backend choice.
    """
    del settings  # not needed by the env backend; kept for the backends to come
    refs = await asyncio.to_thread(store.credentials.refs, account_id, provider)
    if not refs:
        return {}
    return secrets.resolve(provider, refs)
