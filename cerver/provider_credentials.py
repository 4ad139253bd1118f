"""An account's provider credentials: registering (validate, check with the provider,
store), listing (names and times only), and resolving at use.

Each field is either a value, sealed with the server key before it is stored
(``cerver.secretbox``), or a reference ``{"secret": "NAME"}`` resolved through the secrets
backend when used (``cerver.secrets``). ``resolve_credentials`` does that for one account
and provider; adapter-building code reaches it through
``cerver.adapters.credentials.credentials_for``.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Awaitable, Callable
from typing import Any

from cerver import secrets
from cerver.adapters import registry
from cerver.config import Settings
from cerver.credential_schemas import SCHEMAS, CredentialSchema
from cerver.errors import BadRequest, Conflict, NotFound, ProviderAuthFailed, Unprocessable
from cerver.secretbox import SecretBox
from cerver.secrets import ResolvedCredentials
from cerver.store import Store

MAX_VALUE_LEN = 4096
MAX_MODELS = 100
MAX_MODEL_NAME = 100  # llm_spend.model holds 100 characters


def schema_for(provider: str) -> CredentialSchema:
    found = SCHEMAS.get(provider)
    if found is None:
        raise BadRequest(
            f"unknown provider {provider!r}; valid providers: {', '.join(sorted(SCHEMAS))}",
            details={"provider": provider, "valid": sorted(SCHEMAS)},
        )
    return found


def _invalid(field: str, message: str) -> Unprocessable:
    where = f"credentials.{field}"
    return Unprocessable(f"{where}: {message}", details={"field": where})


def split_fields(
    settings: Settings, provider: str, credentials: object
) -> tuple[dict[str, str], dict[str, str]]:
    """Validate a registration body's credentials: (values, references), field by field.
    Messages name fields, never values."""
    schema = schema_for(provider)
    if not isinstance(credentials, dict):
        raise Unprocessable(
            "credentials must be an object of fields", details={"field": "credentials"}
        )
    unknown = sorted(set(credentials) - set(schema.fields))
    if unknown:
        raise Unprocessable(
            f"credentials: unknown field(s) {', '.join(unknown)} for {provider}; "
            f"valid: {', '.join(schema.fields)}",
            details={"field": f"credentials.{unknown[0]}", "valid": list(schema.fields)},
        )
    for name in schema.required:
        if name not in credentials:
            raise _invalid(name, f"required for {provider}")
    values: dict[str, str] = {}
    refs: dict[str, str] = {}
    for field, given in credentials.items():
        if isinstance(given, str):
            if not given.strip() or len(given) > MAX_VALUE_LEN:
                raise _invalid(field, f"must be a non-empty string of at most {MAX_VALUE_LEN}")
            values[field] = given
        elif (
            isinstance(given, dict)
            and set(given) == {"secret"}
            and isinstance(given["secret"], str)
        ):
            name = given["secret"]
            if not name or len(name) > 200:
                raise _invalid(field, "secret: must be a non-empty name")
            secrets.check_reference(settings, field, name)
            refs[field] = name
        else:
            raise _invalid(field, 'must be a string value or a reference {"secret": "NAME"}')
    return values, refs


def check_models(provider: str, models: object) -> list[str]:
    """A registration's ``models``: for a provider whose schema takes them, a non-empty list
    of distinct, non-empty names, none of them a catalog model or ``auto`` (an account's
    model never silently shadows one the catalog routes elsewhere); refused for the others.
    ``None`` (not given) is an empty list."""
    schema = schema_for(provider)
    if models is None:
        return []
    if not schema.models:
        takes = sorted(name for name, s in SCHEMAS.items() if s.models)
        raise Unprocessable(
            f"models: {provider} takes no model list (only {', '.join(takes)} does); drop it",
            details={"field": "models"},
        )
    if not isinstance(models, list) or not models or len(models) > MAX_MODELS:
        raise Unprocessable(
            f"models must be a non-empty list of at most {MAX_MODELS} model names, "
            'e.g. ["llama-3.1-8b"]',
            details={"field": "models"},
        )
    from cerver.llm.catalog import CATALOG

    names: list[str] = []
    for index, name in enumerate(models):
        where = f"models[{index}]"
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_MODEL_NAME:
            raise Unprocessable(
                f"{where} must be a non-empty model name of at most {MAX_MODEL_NAME} characters",
                details={"field": where},
            )
        if name in CATALOG or name == "auto":
            owner = CATALOG[name].harness if name in CATALOG else "routing"
            raise Unprocessable(
                f"{where}: {name!r} is a catalog model served by the {owner} harness "
                "(or a reserved name); name your endpoint's model differently",
                details={"field": where, "model": name},
            )
        if name not in names:
            names.append(name)
    return names


Verifier = Callable[[Settings, ResolvedCredentials], Awaitable[None]]


def _verifier(provider: str) -> Verifier | None:
    schema = schema_for(provider)
    if schema.verify is not None:
        module, _, function = schema.verify.partition(":")
        found: Verifier = getattr(importlib.import_module(module), function)
        return found
    if registry.has_adapter(provider):

        async def with_adapter(settings: Settings, credentials: ResolvedCredentials) -> None:
            adapter = registry.get(provider)(settings, credentials)
            try:
                verify = getattr(adapter, "verify_credentials", None)
                if verify is not None:
                    await verify()
            finally:
                await adapter.close()

        return with_adapter
    return None


async def register(
    settings: Settings,
    store: Store,
    account_id: str,
    provider: str,
    credentials: object,
    models: object = None,
) -> list[str]:
    """Validate, check with the provider, then store (replacing: a rotation, models too).
    Nothing is stored when any step fails. Returns the registered field names."""
    values, refs = split_fields(settings, provider, credentials)
    declared = check_models(provider, models)
    resolved = ResolvedCredentials(
        {**values, **secrets.resolve_references(settings, provider, refs)}
    )
    verify = _verifier(provider)
    if verify is not None:
        try:
            await verify(settings, resolved)
        except ProviderAuthFailed as exc:
            raise Unprocessable(
                f"{provider} refused these credentials; nothing was stored: {exc.message}",
                details={"provider": provider, "field": "credentials"},
            ) from None
    box = await asyncio.to_thread(SecretBox, settings)
    sealed = {field: box.seal(value) for field, value in values.items()}
    await asyncio.to_thread(store.credentials.put, account_id, provider, refs, sealed, declared)
    return sorted({*values, *refs})


def resolve_credentials(
    settings: Settings, store: Store, account_id: str, provider: str
) -> ResolvedCredentials:
    """The account's values for ``provider`` (empty when none are registered): sealed
    values opened, references resolved. Blocking (store, key file): call off the loop."""
    row = store.credentials.get(account_id, provider)
    if row is None:
        return ResolvedCredentials()
    values: dict[str, str] = {}
    if row.sealed:
        box = SecretBox(settings)
        values = {field: box.open(token) for field, token in row.sealed.items()}
    values.update(secrets.resolve_references(settings, provider, row.refs))
    store.credentials.touch(account_id, provider)
    return ResolvedCredentials(values)


def describe(store: Store, account_id: str) -> list[dict[str, Any]]:
    """What the account registered: providers, field names, declared models, times. Never
    a value."""
    listed = []
    for row in store.credentials.for_account(account_id):
        view: dict[str, Any] = {
            "provider": row.provider,
            "fields": row.field_names,
            "references": sorted(row.refs),
            "created_at": row.created_at,
            "updated_at": row.updated_at,
            "last_used_at": row.last_used_at,
        }
        if provider_takes_models(row.provider):
            view["models"] = row.models
        listed.append(view)
    return listed


def provider_takes_models(provider: str) -> bool:
    found = SCHEMAS.get(provider)
    return found is not None and found.models


def declared_models(store: Store, account_id: str, provider: str) -> list[str]:
    """The models the account declared for ``provider`` (blocking: call off the loop)."""
    row = store.credentials.get(account_id, provider)
    return row.models if row is not None else []


async def remove(store: Store, account_id: str, provider: str, *, force: bool) -> list[str]:
    """Delete the account's credentials for ``provider``; the live sessions that ran on it.
    Refuses (409 listing them) while sessions run on it, unless ``force``."""
    schema_for(provider)  # unknown: 400 listing the valid ones
    if await asyncio.to_thread(store.credentials.get, account_id, provider) is None:
        raise NotFound(
            f"no {provider} credentials registered; list them with GET /v2/account/providers"
        )
    computes = await asyncio.to_thread(store.computes.for_account, account_id)
    live = sorted({r.session_id for r in computes if r.provider == provider and r.session_id})
    if live and not force:
        raise Conflict(
            f"{len(live)} live session(s) run on {provider}: {', '.join(live)}; close or "
            f"swap them first, or delete with ?force=1 (their next call will fail)",
            details={"provider": provider, "sessions": live},
        )
    await asyncio.to_thread(store.credentials.delete, account_id, provider)
    return live


__all__ = [
    "check_models",
    "declared_models",
    "describe",
    "register",
    "remove",
    "resolve_credentials",
    "schema_for",
    "split_fields",
]
