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


async def credentials_of_each(
    settings: Settings, store: Store, account_id: str, providers: list[str]
) -> dict[str, dict[str, str]]:
    """``credentials_for`` for several providers in one worker thread (one store read
    when the account registered none of them), by provider; those without any are left
    out. What a model turn calls: it needs the account's keys of every harness."""
    from cerver.provider_credentials import resolve_credentials

    def resolve_each() -> dict[str, dict[str, str]]:
        registered = set(store.credentials.providers(account_id))
        found = {
            provider: resolve_credentials(settings, store, account_id, provider)
            for provider in providers
            if provider in registered
        }
        return {provider: values for provider, values in found.items() if values}

    return await asyncio.to_thread(resolve_each)
