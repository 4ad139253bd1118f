"""Startup failures (exit non-zero within 5 s, naming the variable) and the docs' Python
contract of `secret_fetch` (ValueError), called directly as the verify snippet does."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time

import pytest

from tests.mcp.conftest import CERVER_MCP

pytestmark = pytest.mark.timeout(60)


def start(env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], float]:
    base = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
    began = time.monotonic()
    # stdin open and silent: a server that did start would wait on it (and time out here).
    proc = subprocess.run(
        [CERVER_MCP],
        env=base | env,
        input="",
        capture_output=True,
        text=True,
        timeout=20,
    )
    return proc, time.monotonic() - began


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"CERVER_SECRETS_BACKEND": "infisical"}, "INFISICAL_TOKEN and INFISICAL_PROJECT_ID"),
        (
            {"CERVER_SECRETS_BACKEND": "infisical", "INFISICAL_PROJECT_ID": "p"},
            "INFISICAL_TOKEN is required",
        ),
        (
            {"CERVER_SECRETS_BACKEND": "infisical", "INFISICAL_TOKEN": "st.x"},
            "INFISICAL_PROJECT_ID is required",
        ),
        ({"CERVER_SECRETS_BACKEND": "vault"}, "CERVER_SECRETS_BACKEND='vault'"),
        ({"CERVER_API_URL": "127.0.0.1:8000"}, "CERVER_API_URL='127.0.0.1:8000'"),
        (
            {
                "CERVER_SECRETS_BACKEND": "infisical",
                "INFISICAL_TOKEN": "st.x",
                "INFISICAL_PROJECT_ID": "p",
                "INFISICAL_API_URL": "app.infisical.com",
            },
            "INFISICAL_API_URL='app.infisical.com'",
        ),
        (
            {
                "CERVER_SECRETS_BACKEND": "infisical",
                "INFISICAL_TOKEN": "st.x",
                "INFISICAL_PROJECT_ID": "p",
                "INFISICAL_API_URL": "https://infisical.example.com/api",
            },
            "ends with /api; set the host only",
        ),
    ],
)
def test_missing_or_wrong_setting_exits_fast_naming_it(env: dict[str, str], named: str) -> None:
    proc, took = start(env)
    assert proc.returncode != 0
    assert took < 5.0, f"took {took:.1f}s"
    assert named in proc.stderr
    assert proc.stdout == ""  # stdout is the MCP channel: nothing but protocol there
    assert "st.x" not in proc.stderr


def test_infisical_token_value_never_in_the_error() -> None:
    proc, _ = start({"CERVER_SECRETS_BACKEND": "infisical", "INFISICAL_TOKEN": "st.very-secret"})
    assert proc.returncode != 0 and "INFISICAL_PROJECT_ID" in proc.stderr
    assert "st.very-secret" not in proc.stderr


def fetch(name: str) -> dict[str, str]:
    from cerver_mcp.server import secret_fetch

    return dict(asyncio.run(secret_fetch(name)))


def test_python_contract_value_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.delenv("CERVER_SECRETS_BACKEND", raising=False)
    assert fetch("OPENAI_API_KEY") == {
        "name": "OPENAI_API_KEY",
        "value": "sk-test",
        "source": "env",
    }
    with pytest.raises(ValueError, match="'NOPE' is not set"):
        fetch("NOPE")
    with pytest.raises(ValueError, match="name must not be empty"):
        fetch("")
    monkeypatch.setenv("CERVER_SECRETS_BACKEND", "vault")
    with pytest.raises(ValueError, match="not a known secrets backend; use one of: env, infisical"):
        fetch("OPENAI_API_KEY")
    monkeypatch.setenv("CERVER_SECRETS_BACKEND", "infisical")
    monkeypatch.delenv("INFISICAL_TOKEN", raising=False)
    monkeypatch.setenv("INFISICAL_PROJECT_ID", "p")
    with pytest.raises(ValueError, match="INFISICAL_TOKEN is required"):
        fetch("OPENAI_API_KEY")
