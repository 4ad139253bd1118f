"""Which credential fields each provider takes: a registry of data.

A provider (compute or model API) joins by adding one entry to ``SCHEMAS``; nothing else
in the registration path changes. ``verify`` names an async callable
``(settings, credentials) -> None`` ("module:function") that makes one cheap
authenticated call and raises ``ProviderAuthFailed`` for a refused key; for a provider
with a compute adapter and no ``verify``, the adapter's ``verify_credentials`` is used.
``models``: the registration may declare the model names its endpoint serves
(``"models": [...]``, checked in ``cerver.provider_credentials``); other providers refuse it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CredentialSchema:
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()
    verify: str | None = None
    models: bool = False

    @property
    def fields(self) -> tuple[str, ...]:
        return (*self.required, *self.optional)


SCHEMAS: dict[str, CredentialSchema] = {
    "vercel": CredentialSchema(
        required=("vercel_token",), optional=("vercel_team_id", "vercel_project_id")
    ),
    "e2b": CredentialSchema(required=("e2b_api_key",)),
    "daytona": CredentialSchema(required=("daytona_api_key",), optional=("daytona_target",)),
    # Model APIs (run-llm, cerver/llm/keys.py): the account's own key overrides the
    # deployment's. No check call at registration: a refused key answers 502 on the turn.
    "openai": CredentialSchema(required=("api_key",), optional=("base_url",)),
    "anthropic": CredentialSchema(required=("api_key",), optional=("base_url",)),
    "openai-compatible": CredentialSchema(
        required=("base_url",), optional=("api_key",), models=True
    ),
}
