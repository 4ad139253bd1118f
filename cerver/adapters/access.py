"""Which providers an account can *execute* on here (as opposed to which can be *advised*):
an adapter exists and the account has compute or credentials for it."""

from __future__ import annotations

from cerver.adapters import registry
from cerver.config import Settings
from cerver.store import Store

# Providers that need no per-account credentials: they run on this deployment's own nodes.
SELF_HOSTED = ("local", "ray")


def executable_providers(settings: Settings, store: Store, account_id: str) -> set[str]:
    usable = {p for p in SELF_HOSTED if settings.local_provider and registry.has_adapter(p)}
    for provider in store.credentials.providers(account_id):
        if registry.has_adapter(provider):
            usable.add(registry.canonical(provider))
    return usable
