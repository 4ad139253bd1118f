"""Registering provider credentials (no Ray): validation names fields, references resolve
only where the operator allows, values are sealed at rest, a refused key stores nothing,
and no value appears in a response, error, log or repr."""

from __future__ import annotations

import logging
import stat

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import select

from cerver import provider_credentials as pc
from cerver.config import ConfigError, Settings
from cerver.errors import BadRequest, ComputeUnavailable, Unprocessable
from cerver.secretbox import KEY_FILE, SealedValueUnreadable, SecretBox
from cerver.secrets import ResolvedCredentials
from cerver.serve_app.routes_providers import RegisterProvider
from cerver.store import Store, schema

pytestmark = pytest.mark.timeout(60)

TOKEN = "vercel-token-do-not-leak-8c1f"


def _account(store: Store) -> str:
    return store.accounts.get_or_create("alice").id


async def test_value_is_sealed_at_rest_and_resolves(
    settings: Settings, store: Store, vercel_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    acct = _account(store)
    fields = await pc.register(settings, store, acct, "vercel", {"vercel_token": TOKEN})
    assert fields == ["vercel_token"]
    key = settings.home / KEY_FILE
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    with store.credentials.engine.connect() as conn:
        raw = conn.execute(select(schema.provider_credentials)).mappings().one()
    assert TOKEN not in repr(dict(raw))  # only ciphertext is stored
    resolved = pc.resolve_credentials(settings, store, acct, "vercel")
    assert resolved == {"vercel_token": TOKEN}
    assert TOKEN not in repr(resolved) and TOKEN not in str(resolved)
    listed = pc.describe(store, acct)
    assert listed[0]["fields"] == ["vercel_token"] and listed[0]["last_used_at"] is not None
    assert TOKEN not in repr(listed)
    assert TOKEN not in caplog.text
    # The fake received the token on the one cheap authenticated check.
    seen = httpx.get(f"{vercel_url}/_fake/requests").json()
    assert any(r["token"] == TOKEN and r["path"] == "/v2/sandboxes" for r in seen)


async def test_rotation_keeps_created_at(settings: Settings, store: Store) -> None:
    acct = _account(store)
    await pc.register(settings, store, acct, "vercel", {"vercel_token": "first"})
    first = store.credentials.get(acct, "vercel")
    await pc.register(
        settings, store, acct, "vercel", {"vercel_token": "second", "vercel_team_id": "team_1"}
    )
    second = store.credentials.get(acct, "vercel")
    assert first is not None and second is not None
    assert second.created_at == first.created_at and second.updated_at >= first.updated_at
    assert pc.resolve_credentials(settings, store, acct, "vercel") == {
        "vercel_token": "second",
        "vercel_team_id": "team_1",
    }


async def test_refused_key_is_422_and_stores_nothing(settings: Settings, store: Store) -> None:
    acct = _account(store)
    with pytest.raises(Unprocessable) as info:
        await pc.register(
            settings, store, acct, "vercel", {"vercel_token": "rejected-vercel-token"}
        )
    assert "refused" in info.value.message and "rejected-vercel-token" not in info.value.message
    assert store.credentials.get(acct, "vercel") is None


@pytest.mark.parametrize(
    "credentials,field",
    [
        ({}, "credentials.vercel_token"),
        ({"vercel_token": ""}, "credentials.vercel_token"),
        ({"vercel_token": 7}, "credentials.vercel_token"),
        ({"vercel_token": {"secret": ""}}, "credentials.vercel_token"),
        ({"vercel_token": "x", "api_key": "y"}, "credentials.api_key"),
        ("not-an-object", "credentials"),
    ],
)
def test_bad_fields_name_the_field(settings: Settings, credentials: object, field: str) -> None:
    with pytest.raises(Unprocessable) as info:
        pc.split_fields(settings, "vercel", credentials)
    assert info.value.details["field"] == field


def test_unknown_provider_lists_valid_ones(settings: Settings) -> None:
    with pytest.raises(BadRequest) as info:
        pc.split_fields(settings, "nimbus", {"key": "x"})
    assert {"vercel", "e2b", "daytona"} <= set(info.value.details["valid"])


@pytest.mark.parametrize(
    "name,allowed",
    [
        ("TEST_CLOUD_VERCEL", True),
        ("EXACT_NAME", True),
        ("EXACT_NAME_2", False),
        ("HOME", False),
        ("CERVER_SECRET_KEY", False),
        ("CERVER_DATABASE_URL", False),
        ("DATABASE_URL", False),
    ],
)
def test_reference_policy(settings: Settings, name: str, allowed: bool) -> None:
    body = {"vercel_token": {"secret": name}}
    if allowed:
        assert pc.split_fields(settings, "vercel", body) == ({}, {"vercel_token": name})
    else:
        with pytest.raises(Unprocessable) as info:
            pc.split_fields(settings, "vercel", body)
        assert info.value.details["field"] == "credentials.vercel_token"


def test_no_reference_resolves_when_refs_unset(settings: Settings) -> None:
    closed = settings.model_copy(update={"secret_refs": ()})
    with pytest.raises(Unprocessable, match="CERVER_SECRET_REFS"):
        pc.split_fields(closed, "vercel", {"vercel_token": {"secret": "TEST_CLOUD_X"}})


async def test_reference_resolves_at_use(
    settings: Settings, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    acct = _account(store)
    monkeypatch.setenv("TEST_CLOUD_VERCEL_TOKEN", TOKEN)
    body = {"vercel_token": {"secret": "TEST_CLOUD_VERCEL_TOKEN"}}
    await pc.register(settings, store, acct, "vercel", body)
    row = store.credentials.get(acct, "vercel")
    assert row is not None and row.refs == {"vercel_token": "TEST_CLOUD_VERCEL_TOKEN"}
    assert row.sealed == {}
    monkeypatch.setenv("TEST_CLOUD_VERCEL_TOKEN", "rotated-in-the-backend")
    assert pc.resolve_credentials(settings, store, acct, "vercel") == {
        "vercel_token": "rotated-in-the-backend"
    }
    monkeypatch.delenv("TEST_CLOUD_VERCEL_TOKEN")
    with pytest.raises(ComputeUnavailable, match="TEST_CLOUD_VERCEL_TOKEN"):
        pc.resolve_credentials(settings, store, acct, "vercel")


def test_secret_box_key_handling(settings: Settings) -> None:
    box = SecretBox(settings)
    token = box.seal(TOKEN)
    assert TOKEN not in token and box.open(token) == TOKEN
    assert "key" in repr(box) and TOKEN not in repr(box)
    from cryptography.fernet import Fernet

    other = settings.model_copy(update={"secret_key": SecretStr(Fernet.generate_key().decode())})
    with pytest.raises(SealedValueUnreadable):
        SecretBox(other).open(token)
    with pytest.raises(ConfigError, match="CERVER_SECRET_KEY"):
        SecretBox(settings.model_copy(update={"secret_key": SecretStr("short")}))


def test_settings_read_the_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CERVER_SECRET_REFS", "A_KEY, VAULT_* ,")
    from cryptography.fernet import Fernet

    key = Fernet.generate_key().decode()
    monkeypatch.setenv("CERVER_SECRET_KEY", key)
    monkeypatch.setenv("CERVER_VERCEL_API_URL", "http://127.0.0.1:9/api")
    found = Settings.from_env()
    assert found.secret_refs == ("A_KEY", "VAULT_*")
    assert found.vercel_api_url == "http://127.0.0.1:9/api"
    assert found.secret_key is not None and found.secret_key.get_secret_value() == key
    assert key not in repr(found)


def test_reprs_hide_values() -> None:
    body = RegisterProvider(provider="vercel", credentials={"vercel_token": TOKEN})
    assert TOKEN not in repr(body) and TOKEN not in str(body)
    assert TOKEN not in repr(ResolvedCredentials({"vercel_token": TOKEN}))
