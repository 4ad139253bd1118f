"""Driving `cerver-mcp` as an agent does: spawned over stdio by the official MCP client."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp_types import CallToolResult

from tests.fakes.infisical import FakeInfisical

CERVER_MCP = str(Path(sys.executable).with_name("cerver-mcp"))


@pytest.fixture
def infisical() -> Iterator[FakeInfisical]:
    fake = FakeInfisical().start()
    yield fake
    fake.stop()


def infisical_env(fake: FakeInfisical, **extra: str) -> dict[str, str]:
    return {
        "CERVER_SECRETS_BACKEND": "infisical",
        "INFISICAL_API_URL": fake.url,
        "INFISICAL_TOKEN": fake.token,
        "INFISICAL_PROJECT_ID": fake.project_id,
        **extra,
    }


@asynccontextmanager
async def mcp_client(
    env: dict[str, str], errlog: Path, command: str = CERVER_MCP
) -> AsyncIterator[ClientSession]:
    """`cerver-mcp` spawned with ``env`` (on top of the SDK's safe defaults: PATH, HOME...),
    initialized; its stderr goes to ``errlog`` so tests can read what it logged."""
    params = StdioServerParameters(command=command, env=env)
    with errlog.open("a") as err:
        async with (
            stdio_client(params, errlog=err) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            yield session


def payload(result: CallToolResult) -> Any:
    """A successful tool result: its structured content, else its text (JSON if it is)."""
    assert not result.is_error, result.content
    if result.structured_content is not None:
        return result.structured_content
    text = "".join(getattr(c, "text", "") for c in result.content)
    try:
        return json.loads(text)
    except ValueError:
        return text


def error_text(result: CallToolResult) -> str:
    assert result.is_error, f"expected a tool error, got {result.content}"
    return "".join(getattr(c, "text", "") for c in result.content)
