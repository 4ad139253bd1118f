"""The session tools over MCP (stdio, the official client) against the real gateway (the
shared Ray + Serve app on loopback): list, peek, export of a transcript longer than one
page, the gateway's errors as tool errors, and redaction of fetched secrets."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port
from tests.mcp.conftest import error_text, mcp_client, payload

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

RUNS = 205  # > one export page (200 entries) with the session's own entries on top


def _account_token(store: Any, name: str) -> str:
    return str(store.accounts.issue_token(store.accounts.get_or_create(name).id))


@pytest.fixture(scope="module")
def agent_token(store: Any) -> str:
    return _account_token(store, "mcp-agent")


@pytest.fixture(scope="module")
def agent_api(server: str, agent_token: str) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {agent_token}"}
    with httpx.Client(base_url=server, headers=headers, timeout=60) as client:
        yield client


def create(api: httpx.Client, **body: Any) -> str:
    r = api.post("/v2/sessions", json={"compute": {"provider": "local"}, **body})
    assert r.status_code == 201, r.text
    return str(r.json()["session_id"])


def run(api: httpx.Client, sid: str, code: str, **extra: Any) -> dict[str, Any]:
    r = api.post(f"/v2/sessions/{sid}/run", json={"code": code, **extra})
    assert r.status_code == 200, r.text
    return dict(r.json())


@pytest.fixture(scope="module")
def long_session(agent_api: httpx.Client) -> str:
    sid = create(agent_api, session_name="mcp-long")
    for i in range(RUNS):
        run(agent_api, sid, f"echo line-{i}")
    agent_api.delete(f"/v2/sessions/{sid}")  # closed sessions stay readable
    return sid


def gateway_env(server: str, token: str, **extra: str) -> dict[str, str]:
    return {"CERVER_API_URL": server, "CERVER_API_TOKEN": token, **extra}


async def test_list_pages_and_filters_by_name(
    tmp_path: Path, server: str, agent_token: str, agent_api: httpx.Client
) -> None:
    ids = []
    for i in range(4):
        ids.append(create(agent_api, session_name=f"mcp-list-{i}"))
        agent_api.delete(f"/v2/sessions/{ids[-1]}")
    async with mcp_client(gateway_env(server, agent_token), tmp_path / "err.log") as client:
        first = payload(await client.call_tool("cerver_session_list", {"limit": 2}))
        assert len(first["sessions"]) == 2 and first["next_cursor"]
        second = payload(
            await client.call_tool(
                "cerver_session_list", {"limit": 2, "cursor": first["next_cursor"]}
            )
        )
        named = payload(await client.call_tool("cerver_session_list", {"name": "mcp-list-1"}))
    # Identical content to what the HTTP API gives (humans and agents see the same).
    direct = agent_api.get("/v2/sessions", params={"limit": 2}).json()
    assert first == direct
    seen = [s["session_id"] for s in first["sessions"] + second["sessions"]]
    assert len(set(seen)) == 4  # the second page continues, no repeats
    assert [s["session_id"] for s in named["sessions"]] == [ids[1]]


async def test_peek_tail_and_since(
    tmp_path: Path, server: str, agent_token: str, agent_api: httpx.Client
) -> None:
    sid = create(agent_api, session_name="mcp-peek")
    for i in range(6):
        run(agent_api, sid, f"echo peek-{i}")
    async with mcp_client(gateway_env(server, agent_token), tmp_path / "err.log") as client:
        default = payload(await client.call_tool("cerver_session_peek", {"session_id": sid}))
        last2 = payload(
            await client.call_tool("cerver_session_peek", {"session_id": sid, "tail": 2})
        )
        after = payload(
            await client.call_tool(
                "cerver_session_peek", {"session_id": sid, "since": last2["transcript"][0]["seq"]}
            )
        )
    total = default["transcript_length"]
    assert default["session_id"] == sid and len(default["transcript"]) == total < 50
    assert [e["content"]["result"]["stdout"] for e in last2["transcript"]] == [
        "peek-4\n",
        "peek-5\n",
    ]
    assert [e["seq"] for e in after["transcript"]] == [last2["transcript"][1]["seq"]]
    assert default == agent_api.get(f"/v2/sessions/{sid}", params={"tail": 50}).json() | {
        "metrics": default["metrics"]  # session_length_ms moves with the clock
    }
    agent_api.delete(f"/v2/sessions/{sid}")


async def test_export_reads_a_long_transcript_page_by_page(
    tmp_path: Path, server: str, agent_token: str, agent_api: httpx.Client, long_session: str
) -> None:
    full = agent_api.get(f"/v2/sessions/{long_session}", params={"full": 1}).json()
    assert full["transcript_length"] > 200
    async with mcp_client(gateway_env(server, agent_token), tmp_path / "err.log") as client:
        exported = payload(
            await client.call_tool("cerver_session_export", {"session_id": long_session})
        )
        md = payload(
            await client.call_tool(
                "cerver_session_export", {"session_id": long_session, "format": "markdown"}
            )
        )
    assert exported["transcript"] == full["transcript"]  # every entry, once, in order
    assert exported["session"]["session_id"] == long_session
    assert exported["session"]["transcript_length"] == full["transcript_length"]
    assert isinstance(md, str) and md.startswith(f"# Cerver session {long_session} (mcp-long)")
    assert md.count("\n## ") == full["transcript_length"]
    assert "line-0\n" in md and f"line-{RUNS - 1}\n" in md


async def test_export_asks_in_pages_of_at_most_200_through_since(
    server: str, agent_token: str, long_session: str
) -> None:
    from cerver_mcp.config import GatewayConfig
    from cerver_mcp.gateway import Gateway

    asked: list[httpx.Request] = []

    async def record(request: httpx.Request) -> None:
        asked.append(request)

    gateway = Gateway(GatewayConfig(server, agent_token), request_hooks=[record])
    summary, entries = await gateway.export(long_session)
    assert len(entries) == summary["transcript_length"] > 200
    params = [dict(r.url.params) for r in asked]
    assert len(params) == 2
    assert params[0] == {"since": "0", "tail": "200"}
    assert params[1] == {"since": str(entries[199]["seq"]), "tail": "200"}
    assert all("full" not in p for p in params)


async def test_gateway_errors_carry_its_message(
    tmp_path: Path, server: str, agent_token: str, other_api: httpx.Client
) -> None:
    theirs = create(other_api)
    other_api.delete(f"/v2/sessions/{theirs}")  # closed, still readable by its owner
    async with mcp_client(gateway_env(server, agent_token), tmp_path / "err.log") as client:
        unknown = error_text(
            await client.call_tool("cerver_session_peek", {"session_id": "sess_nope"})
        )
        foreign = error_text(
            await client.call_tool("cerver_session_export", {"session_id": theirs})
        )
        cursor = error_text(await client.call_tool("cerver_session_list", {"cursor": "garbage"}))
        limit = error_text(await client.call_tool("cerver_session_list", {"limit": 0}))
    assert (
        "session sess_nope not found; list yours with GET /v2/sessions (not_found, HTTP 404)"
        in unknown
    )
    # Another account's session is not found, exactly like one that does not exist.
    assert f"session {theirs} not found" in foreign and "HTTP 404" in foreign
    assert "invalid cursor: pass the next_cursor value of a previous page unchanged" in cursor
    assert "HTTP 400" in cursor
    assert "invalid request: limit" in limit and "HTTP 422" in limit


async def test_token_and_url_problems_are_named(tmp_path: Path, server: str) -> None:
    cases = {
        "bad token": gateway_env(server, "ck_not_a_real_token"),
        "no token": {"CERVER_API_URL": server},
        "down": gateway_env(f"http://127.0.0.1:{free_port()}", "ck_x"),
    }
    texts = {}
    for case, env in cases.items():
        async with mcp_client(env, tmp_path / "err.log") as client:
            texts[case] = error_text(await client.call_tool("cerver_session_list", {}))
    assert "invalid or revoked token" in texts["bad token"] and "HTTP 401" in texts["bad token"]
    assert "CERVER_API_TOKEN is not set" in texts["no token"]
    assert "cannot reach the Cerver gateway" in texts["down"] and "CERVER_API_URL" in texts["down"]
    assert "ck_not_a_real_token" not in (tmp_path / "err.log").read_text()


async def test_fetched_secrets_are_masked_in_session_output(
    tmp_path: Path, server: str, agent_token: str, agent_api: httpx.Client
) -> None:
    secret = "sk-live-7f3a9c1e55d0b2"
    sid = create(agent_api, session_name=f"deploy-{secret}")
    # Code that prints the key it was given, and code with the key pasted into it.
    run(agent_api, sid, 'printf "using %s\\n" "$OPENAI_API_KEY"', env={"OPENAI_API_KEY": secret})
    run(agent_api, sid, f"echo {secret} | cut -c1-7; echo {secret}")
    env = gateway_env(server, agent_token, OPENAI_API_KEY=secret)
    errlog = tmp_path / "err.log"
    async with mcp_client(env, errlog) as client:
        peek = {"session_id": sid}
        before = await client.call_tool("cerver_session_peek", peek)
        assert secret in json.dumps(payload(before))  # not fetched yet: shown as it is

        fetched = payload(await client.call_tool("secret_fetch", {"name": "OPENAI_API_KEY"}))
        assert fetched["value"] == secret

        outputs = [
            await client.call_tool("cerver_session_peek", peek),
            await client.call_tool("cerver_session_list", {"name": f"deploy-{secret}"}),
            await client.call_tool("cerver_session_export", peek),
            await client.call_tool("cerver_session_export", {**peek, "format": "markdown"}),
        ]
        missing = await client.call_tool("cerver_session_peek", {"session_id": secret})
    for result in outputs:
        text = json.dumps(payload(result)) + "".join(c.text for c in result.content)
        assert secret not in text
        assert "***" in text
    got = payload(outputs[0])
    assert got["session_name"] == "deploy-***"
    stdouts = [e["content"]["result"]["stdout"] for e in got["transcript"] if e["type"] == "exec"]
    assert stdouts == ["using ***\n", "sk-live\n***\n"]
    assert payload(outputs[1])["sessions"][0]["session_id"] == sid
    assert "session *** not found" in error_text(missing) and secret not in error_text(missing)
    assert secret not in errlog.read_text()
    agent_api.delete(f"/v2/sessions/{sid}")
