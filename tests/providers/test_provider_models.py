"""An account's openai-compatible model list (no Ray): ``"models"`` is checked at
registration (422 naming the field, nothing stored), kept with the credentials, shown by
the listing, replaced on rotation, and seen only by that account's catalog."""

from __future__ import annotations

import pytest

from cerver import provider_credentials as pc
from cerver.config import Settings
from cerver.errors import BadRequest, Unprocessable
from cerver.llm.catalog import Catalog
from cerver.store import Store

pytestmark = pytest.mark.timeout(60)

ENDPOINT = {"base_url": "http://127.0.0.1:9/v1", "api_key": "sk-local"}


def _account(store: Store, name: str = "alice") -> str:
    return store.accounts.get_or_create(name).id


async def test_models_are_stored_listed_and_rotated(settings: Settings, store: Store) -> None:
    acct = _account(store)
    models = ["llama-3.1-8b", "qwen2.5-coder", "llama-3.1-8b"]
    await pc.register(settings, store, acct, "openai-compatible", ENDPOINT, models)
    (listed,) = pc.describe(store, acct)
    assert listed["models"] == ["llama-3.1-8b", "qwen2.5-coder"]  # duplicates dropped
    assert "sk-local" not in repr(listed)
    assert pc.declared_models(store, acct, "openai-compatible") == listed["models"]
    await pc.register(settings, store, acct, "openai-compatible", ENDPOINT, ["mistral-7b"])
    assert pc.declared_models(store, acct, "openai-compatible") == ["mistral-7b"]
    # Registering without a list keeps the endpoint and declares none of its own.
    await pc.register(settings, store, acct, "openai-compatible", ENDPOINT)
    assert pc.describe(store, acct)[0]["models"] == []


@pytest.mark.parametrize(
    "models,field",
    [
        ([], "models"),
        ("llama-3.1-8b", "models"),
        ([""], "models[0]"),
        (["ok", "  "], "models[1]"),
        (["ok", 7], "models[1]"),
        (["x" * 101], "models[0]"),
        (["gpt-5"], "models[0]"),  # a catalog model: would shadow the openai harness
        (["mine", "claude-sonnet-4-5"], "models[1]"),
        (["auto"], "models[0]"),
    ],
)
async def test_bad_model_lists_name_the_field_and_store_nothing(
    settings: Settings, store: Store, models: object, field: str
) -> None:
    acct = _account(store)
    with pytest.raises(Unprocessable) as info:
        await pc.register(settings, store, acct, "openai-compatible", ENDPOINT, models)
    assert info.value.details["field"] == field
    assert field.split("[")[0] in info.value.message
    assert store.credentials.get(acct, "openai-compatible") is None


@pytest.mark.parametrize("provider", ["openai", "anthropic", "vercel"])
async def test_other_providers_refuse_a_model_list(
    settings: Settings, store: Store, provider: str
) -> None:
    creds = {"vercel_token": "t"} if provider == "vercel" else {"api_key": "k"}
    with pytest.raises(Unprocessable) as info:
        await pc.register(settings, store, _account(store), provider, creds, ["llama-3.1-8b"])
    assert info.value.details["field"] == "models"
    assert "openai-compatible" in info.value.message


def test_unknown_provider_is_still_400_first() -> None:
    with pytest.raises(BadRequest):
        pc.check_models("nimbus", ["x"])


def test_an_accounts_catalog_adds_its_models_only(settings: Settings) -> None:
    deployment = settings.model_copy(update={"openai_compatible_models": ["shared-model"]})
    mine = Catalog(deployment, ["my-llama"])
    theirs = Catalog(deployment)
    assert mine.get("my-llama").harness == "openai-compatible"
    assert mine.default_for("openai-compatible").name == "my-llama"  # the account's first
    assert theirs.default_for("openai-compatible").name == "shared-model"
    assert mine.get("gpt-5").harness == "openai"
    with pytest.raises(BadRequest) as info:
        theirs.get("my-llama")
    assert "my-llama" not in info.value.details["known"]
    assert "shared-model" in info.value.details["known"]
    assert '"models"' in info.value.message
