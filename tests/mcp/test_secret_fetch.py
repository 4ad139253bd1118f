"""`secret_fetch` over MCP (stdio, the official client): env and Infisical backends, every
error case of the docs' contract, and what the fake Infisical received."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fakes.infisical import FakeInfisical
from tests.mcp.conftest import error_text, infisical_env, mcp_client, payload

pytestmark = pytest.mark.timeout(60)

TOOLS = {"secret_fetch", "cerver_session_list", "cerver_session_peek", "cerver_session_export"}


async def test_tools_are_listed_with_their_schemas(tmp_path: Path) -> None:
    async with mcp_client({}, tmp_path / "err.log") as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert set(tools) == TOOLS
    for tool in tools.values():
        assert tool.annotations is not None and tool.annotations.read_only_hint is True
    fetch = tools["secret_fetch"]
    assert fetch.input_schema["required"] == ["name"]
    assert set(fetch.output_schema["required"]) == {"name", "value", "source"}
    peek = tools["cerver_session_peek"].input_schema
    assert peek["required"] == ["session_id"] and {"tail", "since"} <= set(peek["properties"])
    export = tools["cerver_session_export"].input_schema
    assert export["properties"]["format"]["enum"] == ["json", "markdown"]
    listing = tools["cerver_session_list"].input_schema["properties"]
    assert {"limit", "name", "cursor"} <= set(listing)


async def test_env_backend_is_the_default(tmp_path: Path) -> None:
    env = {"OPENAI_API_KEY": "sk-test", "openai_api_key": "sk-lower"}
    async with mcp_client(env, tmp_path / "err.log") as client:
        got = payload(await client.call_tool("secret_fetch", {"name": "OPENAI_API_KEY"}))
        assert got == {"name": "OPENAI_API_KEY", "value": "sk-test", "source": "env"}
        # Matching is exact: case included.
        lower = payload(await client.call_tool("secret_fetch", {"name": "openai_api_key"}))
        assert lower["value"] == "sk-lower"
        missing = error_text(await client.call_tool("secret_fetch", {"name": "Openai_Api_Key"}))
    assert "'Openai_Api_Key' is not set" in missing and "CERVER_SECRETS_BACKEND=env" in missing


async def test_env_backend_missing_name_is_a_tool_error(tmp_path: Path) -> None:
    async with mcp_client({"CERVER_SECRETS_BACKEND": "env"}, tmp_path / "err.log") as client:
        text = error_text(await client.call_tool("secret_fetch", {"name": "NOT_THERE"}))
    assert "secret 'NOT_THERE' is not set in the environment" in text


async def test_infisical_backend_reads_through_the_rest_api(
    tmp_path: Path, infisical: FakeInfisical
) -> None:
    infisical.put("OPENAI_API_KEY", "sk-from-vault")
    infisical.put("OPENAI_API_KEY", "sk-staging", environment="staging")
    async with mcp_client(infisical_env(infisical), tmp_path / "err.log") as client:
        got = payload(await client.call_tool("secret_fetch", {"name": "OPENAI_API_KEY"}))
        assert got == {"name": "OPENAI_API_KEY", "value": "sk-from-vault", "source": "infisical"}
        # No cache: a rotated value is seen on the next call, which asks Infisical again.
        infisical.put("OPENAI_API_KEY", "sk-rotated")
        again = payload(await client.call_tool("secret_fetch", {"name": "OPENAI_API_KEY"}))
        assert again["value"] == "sk-rotated"
    fetches = [r for r in infisical.requests if r.path == "/api/v3/secrets/raw/OPENAI_API_KEY"]
    assert len(fetches) == 2
    for r in fetches:
        assert r.headers["authorization"] == f"Bearer {infisical.token}"
        # INFISICAL_ENVIRONMENT defaults to prod; the path to the root folder.
        assert r.query == {
            "workspaceId": infisical.project_id,
            "environment": "prod",
            "secretPath": "/",
        }
    assert infisical.token not in (tmp_path / "err.log").read_text()


async def test_infisical_environment_and_path_are_sent(
    tmp_path: Path, infisical: FakeInfisical
) -> None:
    infisical.put("DB_URL", "postgres://staging", environment="staging", path="/api")
    env = infisical_env(infisical, INFISICAL_ENVIRONMENT="staging", INFISICAL_SECRET_PATH="/api")
    async with mcp_client(env, tmp_path / "err.log") as client:
        got = payload(await client.call_tool("secret_fetch", {"name": "DB_URL"}))
    assert got["value"] == "postgres://staging"
    (last,) = [r for r in infisical.requests if r.path.endswith("/DB_URL")]
    assert last.query["environment"] == "staging" and last.query["secretPath"] == "/api"


async def test_infisical_missing_name_and_refusals_are_tool_errors(
    tmp_path: Path, infisical: FakeInfisical
) -> None:
    infisical.put("STRIPE_SECRET_KEY", "sk_live_x")
    async with mcp_client(infisical_env(infisical), tmp_path / "err.log") as client:
        missing = error_text(await client.call_tool("secret_fetch", {"name": "stripe_secret_key"}))
    assert "'stripe_secret_key' not found in Infisical" in missing
    assert "Secret with name 'stripe_secret_key' not found" in missing  # Infisical's words
    assert f"project {infisical.project_id}, environment prod" in missing

    wrong = infisical_env(infisical, INFISICAL_TOKEN="st.revoked-token")
    async with mcp_client(wrong, tmp_path / "err.log") as client:
        refused = error_text(await client.call_tool("secret_fetch", {"name": "STRIPE_SECRET_KEY"}))
    assert "Infisical answered 401: Failed to authenticate" in refused
    assert "st.revoked-token" not in refused

    other = infisical_env(infisical, INFISICAL_PROJECT_ID="proj_someone_else")
    async with mcp_client(other, tmp_path / "err.log") as client:
        denied = error_text(await client.call_tool("secret_fetch", {"name": "STRIPE_SECRET_KEY"}))
    assert "Infisical answered 403" in denied and "proj_someone_else" in denied
    assert "sk_live_x" not in (tmp_path / "err.log").read_text()


async def test_unreachable_infisical_names_the_setting(tmp_path: Path) -> None:
    from tests.conftest import free_port

    env = {
        "CERVER_SECRETS_BACKEND": "infisical",
        "INFISICAL_API_URL": f"http://127.0.0.1:{free_port()}",
        "INFISICAL_TOKEN": "st.x",
        "INFISICAL_PROJECT_ID": "p",
    }
    async with mcp_client(env, tmp_path / "err.log") as client:
        text = error_text(await client.call_tool("secret_fetch", {"name": "ANY"}))
    assert "cannot reach Infisical" in text and "INFISICAL_API_URL" in text
