"""The vercel adapter on the official SDK against the fake, without Ray: what the fake
received, hibernation (stop, then resume on the next call), and each provider fault as
the Cerver error the session layer expects."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from cerver.adapters import registry
from cerver.adapters.base import ComputeAdapter, ExecRequest, SandboxRecord, SandboxSpec
from cerver.config import Settings
from cerver.errors import (
    ComputeUnavailable,
    NotFound,
    PathEscape,
    ProviderAuthFailed,
    ProviderError,
    RateLimited,
    SandboxLost,
)

pytestmark = pytest.mark.timeout(90)

TOKEN = "adapter-test-token"


@pytest.fixture
async def adapter(settings: Settings) -> AsyncIterator[ComputeAdapter]:
    instance = registry.get("vercel")(settings, {"vercel_token": TOKEN, "vercel_team_id": "team_9"})
    yield instance
    await instance.close()


@pytest.fixture
async def sandbox(adapter: ComputeAdapter) -> AsyncIterator[SandboxRecord]:
    record = await adapter.create_sandbox(SandboxSpec(account_id="acct", env={"GREETING": "hey"}))
    yield record
    await adapter.delete_sandbox(record)


def _received(url: str) -> list[dict]:
    return list(httpx.get(f"{url}/_fake/requests").json())


def _fault(url: str, **spec: object) -> None:
    httpx.post(f"{url}/_fake/faults", json=spec).raise_for_status()


async def test_what_the_fake_received(
    adapter: ComputeAdapter, sandbox: SandboxRecord, vercel_url: str
) -> None:
    result = await adapter.run(sandbox, ExecRequest(code="echo $GREETING $X", env={"X": "you"}))
    assert result.stdout == "hey you\n"
    mine = [r for r in _received(vercel_url) if r["token"] == TOKEN]
    create = next(r for r in mine if r["path"] == "/v3/sandboxes")
    assert create["body"]["projectId"] == "cerver" and create["body"]["env"] == {"GREETING": "hey"}
    assert create["body"]["persistent"] is True
    assert all(r["query"].get("teamId") == "team_9" for r in mine)
    run = next(r for r in mine if r["path"].endswith("/cmd") and "body" in r)
    assert run["body"]["command"] == "bash" and run["body"]["env"] == {"X": "you"}
    assert run["body"]["cwd"] == "/vercel/sandbox"


async def test_hibernate_stops_and_the_next_run_resumes(
    adapter: ComputeAdapter, sandbox: SandboxRecord, vercel_url: str
) -> None:
    await adapter.write_file(sandbox, "kept.txt", b"still here")
    await adapter.suspend(sandbox)
    state = await adapter.get_state(sandbox)
    assert state.details["vercel_status"] == "stopped" and state.status == "running"
    result = await adapter.run(sandbox, ExecRequest(code="cat kept.txt"))
    assert result.stdout == "still here"
    paths = [r["path"] for r in _received(vercel_url) if r["token"] == TOKEN]
    assert any(p.endswith("/stop") for p in paths)


async def test_faults_become_cerver_errors(
    adapter: ComputeAdapter, sandbox: SandboxRecord, vercel_url: str
) -> None:
    shell = ExecRequest(code="echo ok", language="shell")
    _fault(vercel_url, path=f"/v2/sandboxes/{sandbox.sandbox_id}", status=429, retry_after=9)
    with pytest.raises(RateLimited) as limited:
        await adapter.run(sandbox, shell)
    assert limited.value.retry_after_s == 9
    _fault(vercel_url, path="/cmd", status=502)
    with pytest.raises(ProviderError) as outage:
        await adapter.run(sandbox, shell)
    assert outage.value.code == "provider_error"
    assert (await adapter.run(sandbox, shell)).stdout == "ok\n"
    with pytest.raises(NotFound):
        await adapter.read_file(sandbox, "missing.txt")
    with pytest.raises(PathEscape):
        await adapter.read_file(sandbox, "../etc/passwd")
    httpx.post(f"{vercel_url}/_fake/vanish/{sandbox.sandbox_id}").raise_for_status()
    with pytest.raises(SandboxLost):
        await adapter.run(sandbox, shell)
    assert not await adapter.is_alive(sandbox)


async def test_refused_key_is_auth_failed_without_the_key(settings: Settings) -> None:
    refused = registry.get("vercel")(settings, {"vercel_token": "rejected-vercel-token"})
    with pytest.raises(ProviderAuthFailed) as info:
        await refused.create_sandbox(SandboxSpec(account_id="acct"))
    assert info.value.status == 502 and "rejected-vercel-token" not in info.value.message
    assert "Not authorized" in info.value.message


async def test_default_language_falls_back_to_shell(
    adapter: ComputeAdapter, sandbox: SandboxRecord
) -> None:
    node = ExecRequest(code="console.log(6 * 7)", language="node", shell_fallback=True)
    assert (await adapter.run(sandbox, node)).stdout == "42\n"
    shell = ExecRequest(code="echo from shell", language="node", shell_fallback=True)
    assert (await adapter.run(sandbox, shell)).stdout == "from shell\n"
    strict = await adapter.run(sandbox, ExecRequest(code="echo from shell", language="node"))
    assert strict.exit_code != 0 and "SyntaxError" in strict.stderr
    python = ExecRequest(code="print('py')", language="python", shell_fallback=True)
    assert (await adapter.run(sandbox, python)).stdout == "py\n"


def test_missing_extra_is_409_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from cerver.adapters import remote

    monkeypatch.setitem(sys.modules, "vercel.sandbox", None)
    with pytest.raises(ComputeUnavailable) as info:
        remote.import_sdk("vercel.sandbox", provider="vercel", extra="vercel")
    assert "cerver-on-ray[vercel]" in info.value.message
