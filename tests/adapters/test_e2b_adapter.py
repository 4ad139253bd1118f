"""The e2b adapter against the fake E2B (a real HTTP server in a subprocess), driven through
the official SDK: faults and what E2B received, beyond the contract suite."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from cerver.adapters import registry
from cerver.adapters.base import ComputeAdapter, ExecRequest, SandboxRecord, SandboxSpec
from cerver.errors import (
    ComputeUnavailable,
    ProviderAuthFailed,
    RateLimited,
    SandboxLost,
)
from tests.adapters.conftest import make_settings
from tests.fakes import e2b as fake_e2b

pytestmark = pytest.mark.timeout(60)

KEY = "e2b_test_key_7f3a9c"
REJECTED = "e2b_revoked_key_51d2e8"


@pytest.fixture(scope="module")
def fake() -> Iterator[fake_e2b.FakeProcess]:
    with fake_e2b.running("--reject-key", REJECTED) as proc:
        yield proc


def _adapter(fake: fake_e2b.FakeProcess, home: Path, key: str | None = KEY) -> ComputeAdapter:
    settings = make_settings(home, "auto").model_copy(
        update={"e2b_api_url": fake.url, "e2b_sandbox_url": fake.env["CERVER_E2B_SANDBOX_URL"]}
    )
    return registry.get("e2b")(settings, {"e2b_api_key": key} if key else {})


@pytest.fixture
async def adapter(fake: fake_e2b.FakeProcess, home: Path) -> AsyncIterator[ComputeAdapter]:
    instance = _adapter(fake, home)
    yield instance
    await instance.close()


@pytest.fixture
async def sandbox(adapter: ComputeAdapter) -> AsyncIterator[SandboxRecord]:
    record = await adapter.create_sandbox(SandboxSpec(account_id="acct_e2b"))
    yield record
    await adapter.delete_sandbox(record)


def _calls(fake: fake_e2b.FakeProcess, method: str, path: str) -> list[dict[str, object]]:
    return [r for r in fake.received() if r["method"] == method and r["path"] == path]


async def test_a_refused_key_is_502_provider_auth_failed_without_the_key(
    fake: fake_e2b.FakeProcess, home: Path
) -> None:
    adapter = _adapter(fake, home, key=REJECTED)
    with pytest.raises(ProviderAuthFailed) as info:
        await adapter.create_sandbox(SandboxSpec(account_id="acct_e2b"))
    err = info.value
    assert err.status == 502 and err.code == "provider_auth_failed"
    assert "Invalid API key" in err.message  # E2B's own words
    texts = [err.message, repr(err), str(err.details), repr(adapter), str(err.__cause__)]
    assert not any(REJECTED in text for text in texts)
    # It was refused by E2B, which did receive the key in the header E2B reads.
    assert _calls(fake, "POST", "/v2/sandboxes")[-1]["api_key"] == REJECTED


async def test_verify_credentials_is_one_authenticated_call(
    fake: fake_e2b.FakeProcess, home: Path, adapter: ComputeAdapter
) -> None:
    before = len(_calls(fake, "GET", "/v2/sandboxes"))
    await adapter.verify_credentials()  # type: ignore[attr-defined]
    calls = _calls(fake, "GET", "/v2/sandboxes")
    assert len(calls) == before + 1 and calls[-1]["api_key"] == KEY
    with pytest.raises(ProviderAuthFailed):
        await _adapter(fake, home, key=REJECTED).verify_credentials()  # type: ignore[attr-defined]


async def test_a_key_revoked_later_fails_control_calls_but_the_sandbox_still_runs(
    fake: fake_e2b.FakeProcess, home: Path
) -> None:
    key = "e2b_soon_revoked_" + home.name
    adapter = _adapter(fake, home, key=key)
    record = await adapter.create_sandbox(SandboxSpec(account_id="acct_e2b"))
    fake.reject(key)  # deleted in E2B's dashboard
    # In-sandbox calls use the sandbox's own access token, as at E2B.
    assert (await adapter.run(record, ExecRequest(code="echo on"))).stdout == "on\n"
    with pytest.raises(ProviderAuthFailed) as info:
        await adapter.get_state(record)
    assert key not in info.value.message
    await _adapter(fake, home).delete_sandbox(record)  # another key of the account


async def test_rate_limit_is_429_after_the_sdk_retried(
    fake: fake_e2b.FakeProcess, adapter: ComputeAdapter
) -> None:
    before = len(_calls(fake, "POST", "/v2/sandboxes"))
    fake.rate_limit(count=4, retry_after=0)  # the SDK tries 1 + 3 times, honouring Retry-After
    with pytest.raises(RateLimited) as info:
        await adapter.create_sandbox(SandboxSpec(account_id="acct_e2b"))
    assert info.value.status == 429 and info.value.retry_after_s > 0
    assert len(_calls(fake, "POST", "/v2/sandboxes")) - before == 4
    record = await adapter.create_sandbox(SandboxSpec(account_id="acct_e2b"))  # limit over
    await adapter.delete_sandbox(record)


async def test_a_sandbox_deleted_at_e2b_is_lost(
    fake: fake_e2b.FakeProcess, adapter: ComputeAdapter, sandbox: SandboxRecord
) -> None:
    assert (await adapter.run(sandbox, ExecRequest(code="echo up"))).stdout == "up\n"
    # Deleted behind Cerver's back (E2B's console, or its timeout).
    r = httpx.delete(f"{fake.url}/sandboxes/{sandbox.sandbox_id}", headers={"X-API-KEY": KEY})
    assert r.status_code == 204
    with pytest.raises(SandboxLost) as info:
        await adapter.run(sandbox, ExecRequest(code="echo again"))
    assert info.value.details["sandbox_id"] == sandbox.sandbox_id
    with pytest.raises(SandboxLost):
        await adapter.run(sandbox, ExecRequest(code="print(1)", language="python"))
    assert not await adapter.is_alive(sandbox)
    assert (await adapter.get_state(sandbox)).status == "lost"


async def test_suspend_pauses_and_the_next_run_resumes_with_python_state(
    fake: fake_e2b.FakeProcess, adapter: ComputeAdapter, sandbox: SandboxRecord
) -> None:
    await adapter.run(sandbox, ExecRequest(code="kept = 'across a pause'", language="python"))
    await adapter.suspend(sandbox)
    assert (await adapter.get_state(sandbox)).status == "paused"
    assert await adapter.is_alive(sandbox)
    result = await adapter.run(sandbox, ExecRequest(code="print(kept)", language="python"))
    assert result.stdout == "across a pause\n"
    assert (await adapter.get_state(sandbox)).status == "running"
    connects = _calls(fake, "POST", f"/v2/sandboxes/{sandbox.sandbox_id}/connect")
    assert connects and connects[-1]["api_key"] == KEY


async def test_e2b_timeout_pauses_and_the_next_run_resumes(
    fake: fake_e2b.FakeProcess, adapter: ComputeAdapter
) -> None:
    record = await adapter.create_sandbox(SandboxSpec(account_id="acct_e2b", timeout_s=4))
    try:
        await adapter.run(record, ExecRequest(code="n = 41", language="python"))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while (await adapter.get_state(record)).status != "paused":  # on_timeout: pause
            assert loop.time() < deadline, "the fake never paused the sandbox"
            await asyncio.sleep(0.25)
        # The adapter still holds the connection from before the pause: the run finds the
        # sandbox paused, resumes it and runs, with the Python state the pause kept.
        result = await adapter.run(record, ExecRequest(code="print(n + 1)", language="python"))
        assert result.stdout == "42\n"
        assert _calls(fake, "POST", f"/v2/sandboxes/{record.sandbox_id}/connect")
        assert (await adapter.get_state(record)).status == "running"
    finally:
        await adapter.delete_sandbox(record)


async def test_python_timeout_restarts_the_context_and_says_so(
    adapter: ComputeAdapter, sandbox: SandboxRecord
) -> None:
    await adapter.run(sandbox, ExecRequest(code="before = 1", language="python"))
    slow = ExecRequest(code="import time; time.sleep(30)", language="python", timeout_s=1)
    result = await adapter.run(sandbox, slow)
    assert result.timed_out and result.interpreter_restarted
    assert result.error is not None and "timed out" in result.error
    after = await adapter.run(
        sandbox, ExecRequest(code="print('before' in dir())", language="python")
    )
    assert after.stdout == "False\n"


async def test_stream_delivers_output_before_the_command_ends(
    adapter: ComputeAdapter, sandbox: SandboxRecord
) -> None:
    request = ExecRequest(code="echo first; sleep 1; echo second")
    seen: list[tuple[str, float]] = []
    loop = asyncio.get_running_loop()
    async for event in adapter.run_stream(sandbox, request):
        seen.append((event.type, loop.time()))
    assert seen[0][0] == "stdout" and seen[-1][0] == "exit"
    assert seen[-1][1] - seen[0][1] > 0.5  # the first line came while it still ran


async def test_closing_a_stream_early_kills_the_command_at_e2b(
    fake: fake_e2b.FakeProcess, adapter: ComputeAdapter, sandbox: SandboxRecord
) -> None:
    before = len(_calls(fake, "POST", "/process.Process/SendSignal"))
    events = adapter.run_stream(sandbox, ExecRequest(code="echo started; sleep 30"))
    first = await anext(events)
    assert (first.type, first.data) == ("stdout", "started\n")
    await events.aclose()  # type: ignore[attr-defined]
    assert len(_calls(fake, "POST", "/process.Process/SendSignal")) == before + 1


async def test_env_and_cwd_reach_the_command(
    adapter: ComputeAdapter, sandbox: SandboxRecord
) -> None:
    await adapter.write_file(sandbox, "sub/marker.txt", b"x")
    result = await adapter.run(
        sandbox, ExecRequest(code="echo $GREETING; ls", env={"GREETING": "hi"}, cwd="sub")
    )
    assert result.stdout == "hi\nmarker.txt\n"


async def test_code_beyond_the_argv_limit_goes_through_a_file_that_is_removed(
    fake: fake_e2b.FakeProcess, adapter: ComputeAdapter, sandbox: SandboxRecord
) -> None:
    code = "echo big\n" + "# padding\n" * 8000  # 80 KB: more than one argv string may hold
    result = await adapter.run(sandbox, ExecRequest(code=code))
    assert (result.stdout, result.exit_code) == ("big\n", 0)
    assert _calls(fake, "POST", "/filesystem.Filesystem/Remove")
    left = await adapter.run(sandbox, ExecRequest(code="ls -A .cerver"))
    assert left.exit_code == 0 and "run-" not in left.stdout


async def test_no_credentials_is_409_naming_the_field(
    fake: fake_e2b.FakeProcess, home: Path
) -> None:
    with pytest.raises(ComputeUnavailable) as info:
        await _adapter(fake, home, key=None).create_sandbox(SandboxSpec(account_id="acct_e2b"))
    assert info.value.status == 409 and "e2b_api_key" in info.value.message


MISSING_EXTRA = """
import asyncio, sys
sys.modules["e2b_code_interpreter"] = None  # as if the extra were not installed
from pathlib import Path
from cerver.adapters import registry
from cerver.adapters.base import SandboxSpec
from cerver.config import Settings
from cerver.errors import ComputeUnavailable
assert "e2b" in registry.names()
settings = Settings(home=Path("/tmp"), database_url="sqlite://")
adapter = registry.get("e2b")(settings, {"e2b_api_key": "k"})
try:
    asyncio.run(adapter.create_sandbox(SandboxSpec(account_id="a")))
except ComputeUnavailable as exc:
    print(exc.status, exc.message)
"""


def test_a_missing_extra_is_409_naming_it() -> None:
    done = subprocess.run(
        [sys.executable, "-c", MISSING_EXTRA], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("409 ") and 'pip install "cerver-on-ray[e2b]"' in done.stdout
