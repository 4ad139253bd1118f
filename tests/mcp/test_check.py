"""`cerver-mcp --check` against the real gateway and the fake Infisical."""

from __future__ import annotations

import os
import subprocess
from typing import Any

import pytest

from tests.fakes.infisical import FakeInfisical
from tests.mcp.conftest import CERVER_MCP, infisical_env

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run(
        [CERVER_MCP, "--check"], env=base | env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture(scope="module")
def check_token(store: Any) -> str:
    return str(store.accounts.issue_token(store.accounts.get_or_create("mcp-check").id))


def test_everything_reachable(server: str, check_token: str, infisical: FakeInfisical) -> None:
    infisical.put("OPENAI_API_KEY", "sk-never-printed")
    env = infisical_env(infisical, CERVER_API_URL=server, CERVER_API_TOKEN=check_token)
    out = check(env)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("ok    secrets backend infisical: ok")
    assert f"project {infisical.project_id}, environment prod, path /, 1 secrets" in lines[0]
    assert lines[1] == f"ok    gateway: {server}, token accepted (no sessions yet)"
    assert "sk-never-printed" not in out.stdout + out.stderr
    assert check_token not in out.stdout + out.stderr
    (ping,) = infisical.requests
    assert ping.path == "/api/v3/secrets/raw" and ping.query["viewSecretValue"] == "false"
    assert ping.headers["authorization"] == f"Bearer {infisical.token}"


def test_each_failing_part_is_named(server: str, check_token: str) -> None:
    out = check({"CERVER_SECRETS_BACKEND": "infisical", "CERVER_API_URL": server})
    assert out.returncode == 1
    backend, gateway = out.stdout.splitlines()
    assert backend.startswith("FAIL  secrets backend: INFISICAL_TOKEN and INFISICAL_PROJECT_ID")
    assert gateway.startswith("FAIL  gateway: CERVER_API_TOKEN is not set")

    out = check({"CERVER_API_URL": server, "CERVER_API_TOKEN": "ck_wrong"})
    assert out.returncode == 1
    backend, gateway = out.stdout.splitlines()
    assert backend.startswith("ok    secrets backend env: ok")
    assert "invalid or revoked token" in gateway and gateway.startswith("FAIL  gateway")


def test_refusing_infisical_fails_the_check(
    server: str, check_token: str, infisical: FakeInfisical
) -> None:
    env = infisical_env(
        infisical,
        INFISICAL_TOKEN="st.other",
        CERVER_API_URL=server,
        CERVER_API_TOKEN=check_token,
    )
    out = check(env)
    assert out.returncode == 1
    assert "FAIL  secrets backend: Infisical answered 401" in out.stdout
    assert "ok    gateway" in out.stdout and "st.other" not in out.stdout
