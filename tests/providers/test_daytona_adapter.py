"""The daytona adapter on the official SDK against the fake, without Ray: what the fake
received, registration (one cheap authenticated call; a refused key stores nothing),
hibernation (stop, then start on the next call: files kept, Python variables not), and
each provider fault as the Cerver error the session layer expects."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator

import httpx
import pytest

from cerver import provider_credentials as pc
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
    Unprocessable,
)
from cerver.store import Store
from tests.providers.conftest import DAYTONA_REJECTED

pytestmark = pytest.mark.timeout(90)

KEY = "daytona-adapter-test-key"


def _fake(url: str) -> str:
    return url.removesuffix("/api")


def _received(url: str, key: str = KEY) -> list[dict]:
    seen = httpx.get(f"{_fake(url)}/_fake/requests").json()
    return [r for r in seen if r["key"] == key]


def _fault(url: str, **spec: object) -> None:
    httpx.post(f"{_fake(url)}/_fake/faults", json=spec).raise_for_status()


@pytest.fixture
async def adapter(settings: Settings) -> AsyncIterator[ComputeAdapter]:
    instance = registry.get("daytona")(settings, {"daytona_api_key": KEY, "daytona_target": "eu"})
    yield instance
    await instance.close()


@pytest.fixture
async def sandbox(adapter: ComputeAdapter) -> AsyncIterator[SandboxRecord]:
    spec = SandboxSpec(account_id="acct_d", env={"GREETING": "hey"}, network=True)
    record = await adapter.create_sandbox(spec)
    yield record
    await adapter.delete_sandbox(record)


async def test_what_the_fake_received(
    adapter: ComputeAdapter, sandbox: SandboxRecord, daytona_url: str
) -> None:
    result = await adapter.run(sandbox, ExecRequest(code="echo $GREETING $X", env={"X": "you"}))
    assert result.stdout == "hey you\n"
    sub = await adapter.run(sandbox, ExecRequest(code="mkdir -p d && cd d && pwd", cwd="."))
    assert sub.stdout.strip().endswith("/d")
    mine = _received(daytona_url)
    assert ("SIO", "/api/socket.io/") in [(r["method"], r["path"]) for r in mine]  # events
    create = next(r for r in mine if r["method"] == "POST" and r["path"] == "/api/sandbox")
    body = create["body"]
    assert body["env"] == {"GREETING": "hey"} and body["target"] == "eu"
    assert body["labels"]["cerver_account"] == "acct_d" and body["networkBlockAll"] is False
    assert body["autoStopInterval"] == 60  # the server's idle setting, in minutes
    run = next(r for r in mine if r["path"].endswith("/exec"))
    assert run["body"]["runAsync"] is True and "X='you'" not in run["body"]["command"]
    assert "X=you bash -c" in run["body"]["command"]
    # The run's own session was deleted once it finished (in the background; closing
    # the adapter waits for that), so nothing is left running.
    await adapter.close()
    mine = _received(daytona_url)
    sessions = [r for r in mine if r["path"].endswith("/process/session")]
    deleted = [r for r in mine if r["method"] == "DELETE" and "/process/session/" in r["path"]]
    assert len(sessions) == len(deleted) == 2
    assert all(r["path"].startswith(f"/toolbox/{sandbox.sandbox_id}/") for r in sessions)


async def test_registration_is_checked_with_one_call(settings: Settings, daytona_url: str) -> None:
    store = Store.open(settings.database_url)
    acct = store.accounts.get_or_create("dora").id
    key = "daytona-registered-key-71"
    assert await pc.register(settings, store, acct, "daytona", {"daytona_api_key": key}) == [
        "daytona_api_key"
    ]
    seen = [r for r in _received(daytona_url, key) if r["method"] != "SIO"]  # events
    assert [(r["method"], r["path"], r["query"]) for r in seen] == [
        ("GET", "/api/sandbox", {"limit": "1"})
    ]
    assert pc.resolve_credentials(settings, store, acct, "daytona") == {"daytona_api_key": key}
    with pytest.raises(Unprocessable) as info:
        await pc.register(settings, store, acct, "daytona", {"daytona_api_key": DAYTONA_REJECTED})
    assert "refused" in info.value.message and DAYTONA_REJECTED not in info.value.message
    # The refused key replaced nothing: the first one is still what is stored.
    assert pc.resolve_credentials(settings, store, acct, "daytona") == {"daytona_api_key": key}
    other = store.accounts.get_or_create("dora-2").id
    with pytest.raises(Unprocessable):
        await pc.register(settings, store, other, "daytona", {"daytona_api_key": DAYTONA_REJECTED})
    assert store.credentials.get(other, "daytona") is None


async def test_hibernate_stops_and_the_next_call_starts_it(
    adapter: ComputeAdapter, sandbox: SandboxRecord, daytona_url: str
) -> None:
    await adapter.write_file(sandbox, "kept.txt", b"still here")
    await adapter.run(sandbox, ExecRequest(code="counter = 41", language="python"))
    again = await adapter.run(sandbox, ExecRequest(code="print(counter + 1)", language="python"))
    assert again.stdout == "42\n"
    await adapter.suspend(sandbox)
    state = await adapter.get_state(sandbox)
    assert state.status == "running" and state.details["daytona_state"] == "stopped"
    assert (await adapter.run(sandbox, ExecRequest(code="cat kept.txt"))).stdout == "still here"
    lost = await adapter.run(sandbox, ExecRequest(code="print(counter)", language="python"))
    assert lost.exit_code == 1 and "NameError" in (lost.error or "")
    paths = [(r["method"], r["path"]) for r in _received(daytona_url)]
    stop = paths.index(("POST", f"/api/sandbox/{sandbox.sandbox_id}/stop"))
    assert ("POST", f"/api/sandbox/{sandbox.sandbox_id}/start") in paths[stop:]


async def test_faults_become_cerver_errors(
    adapter: ComputeAdapter, sandbox: SandboxRecord, daytona_url: str
) -> None:
    shell = ExecRequest(code="echo ok")
    _fault(daytona_url, path=f"/api/sandbox/{sandbox.sandbox_id}", status=429, retry_after=9)
    with pytest.raises(RateLimited) as limited:
        await adapter.run(sandbox, shell)
    assert limited.value.retry_after_s == 9
    _fault(daytona_url, path="/process/session", status=502)
    with pytest.raises(ProviderError) as outage:
        await adapter.run(sandbox, shell)
    assert outage.value.code == "provider_error"
    assert (await adapter.run(sandbox, shell)).stdout == "ok\n"
    with pytest.raises(NotFound):
        await adapter.read_file(sandbox, "missing.txt")
    with pytest.raises(PathEscape):
        await adapter.read_file(sandbox, "../etc/passwd")
    httpx.post(f"{_fake(daytona_url)}/_fake/vanish/{sandbox.sandbox_id}").raise_for_status()
    with pytest.raises(SandboxLost):
        await adapter.run(sandbox, shell)
    assert not await adapter.is_alive(sandbox)


async def test_refused_key_is_auth_failed_without_the_key(settings: Settings) -> None:
    refused = registry.get("daytona")(settings, {"daytona_api_key": DAYTONA_REJECTED})
    try:
        with pytest.raises(ProviderAuthFailed) as info:
            await refused.create_sandbox(SandboxSpec(account_id="acct"))
    finally:
        await refused.close()
    assert info.value.status == 502 and DAYTONA_REJECTED not in info.value.message
    assert "Invalid API key" in info.value.message
    assert DAYTONA_REJECTED not in repr(refused)


async def test_default_language_falls_back_to_shell(
    adapter: ComputeAdapter, sandbox: SandboxRecord
) -> None:
    python = ExecRequest(code="print('py')", language="python", shell_fallback=True)
    assert (await adapter.run(sandbox, python)).stdout == "py\n"
    shell = ExecRequest(code="echo from shell", language="python", shell_fallback=True)
    assert (await adapter.run(sandbox, shell)).stdout == "from shell\n"
    node = ExecRequest(code="console.log(6 * 7)", language="node", shell_fallback=True)
    assert (await adapter.run(sandbox, node)).stdout == "42\n"
    strict = await adapter.run(sandbox, ExecRequest(code="echo x", language="node"))
    assert strict.exit_code != 0 and "SyntaxError" in strict.stderr


async def test_closing_a_stream_early_kills_the_run(
    adapter: ComputeAdapter, sandbox: SandboxRecord, daytona_url: str
) -> None:
    events = adapter.run_stream(sandbox, ExecRequest(code="echo started; sleep 30; echo never"))
    async for event in events:
        assert event.type == "stdout" and event.data == "started\n"
        break
    await events.aclose()  # type: ignore[attr-defined]
    deleted = [
        r for r in _received(daytona_url)
        if r["method"] == "DELETE" and "/process/session/" in r["path"]
    ]  # fmt: skip
    assert deleted, "the run's session (and its process) was not deleted"


async def test_missing_extra_is_409_naming_it(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "daytona", None)
    adapter = registry.get("daytona")(settings, {"daytona_api_key": KEY})
    with pytest.raises(ComputeUnavailable) as info:
        await adapter.create_sandbox(SandboxSpec(account_id="acct"))
    assert info.value.status == 409 and "cerver-on-ray[daytona]" in info.value.message


async def test_a_python_run_past_its_timeout_says_so(
    adapter: ComputeAdapter, sandbox: SandboxRecord, daytona_url: str
) -> None:
    spin = ExecRequest(code="while True: pass", language="python", timeout_s=1)
    result = await adapter.run(sandbox, spin)
    assert result.timed_out and result.exit_code == 124
    assert "timed out" in result.stderr and "timed out" in (result.error or "")
    # The interpreter is usable again afterwards.
    after = await adapter.run(sandbox, ExecRequest(code="print('back')", language="python"))
    assert after.stdout == "back\n"
    sent = [r for r in _received(daytona_url) if r["path"].endswith("/interpreter/execute")]
    assert sent and all(r["method"] == "WS" for r in sent)
