"""The one place where an account's credentials for a provider are turned into values.

Called each time an adapter handle is needed (provisioning, and every later operation on
the sandbox), so a rotated secret takes effect at the next call. The values go to the
adapter only: they are never stored in a sandbox record, the store, a log, a transcript or
a response.
"""

from __future__ import annotations

import asyncio

from cerver.config import Settings
from cerver.store import Store


async def credentials_for(
    settings: Settings, store: Store, account_id: str, provider: str
) -> dict[str, str]:
    """The resolved credentials of ``account_id`` for ``provider`` (``{}`` when it has none).

    Registered with ``POST /v2/account/providers`` (``cerver.provider_credentials``): sealed
    values are opened with the server key, references resolved by the secrets backend
    (only names ``CERVER_SECRET_REFS`` allows), which raises ``ComputeUnavailable`` (409)
    naming what is missing. The result is a ``ResolvedCredentials``, whose repr shows field
    names only. The store and key file are read in a worker thread, never on the loop.
    """
    from cerver.provider_credentials import resolve_credentials

    return await asyncio.to_thread(resolve_credentials, settings, store, account_id, provider)
