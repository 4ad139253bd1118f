"""One contract suite, run against every registered compute provider.

A provider joins by registering its adapter and adding a case to ``CASES`` that
builds a ready instance (e.g. pointed at a fake of its HTTP API). A registered provider
without a factory is reported as skipped, with the reason, never silently passed.
"""

from __future__ import annotations

import secrets
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest

from cerver.adapters import registry
from cerver.adapters.base import (
    ComputeAdapter,
    ExecRequest,
    InstallRequest,
    SandboxRecord,
    SandboxSpec,
)
from cerver.config import Settings
from cerver.errors import BadRequest, CerverError
from tests.fakes import e2b as fake_e2b
from tests.fakes.process import start_fake

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("ray_runtime")]


def _settings(tmp_path: Path, isolation: str = "auto") -> Settings:
    home = tmp_path / "home"
    home.mkdir()
    return Settings(
        home=home,
        database_url=f"sqlite:///{home / 'cerver.db'}",
        output_limit_bytes=64 * 1024,
        max_file_bytes=64 * 1024,
        sandbox_isolation=isolation,
    )


Factory = Callable[[Path, pytest.FixtureRequest], ComputeAdapter]


@pytest.fixture(scope="module")
def e2b_contract_fake() -> Iterator[fake_e2b.FakeProcess]:
    with fake_e2b.running() as fake:
        yield fake
        received = fake.received()
    # What E2B saw: the account's key on every control-plane call, the sandbox's own
    # access token (never the account key) on every envd call.
    api = [r for r in received if r["sandbox_id"] is None]
    envd = [r for r in received if r["port"] == "49983" and r["path"] != "/health"]
    assert api and all(r["api_key"] == "e2b_contract_key" for r in api)
    assert envd and all(r["access_token"] and r["api_key"] is None for r in envd)


def _local(isolation: str) -> Factory:
    def make(tmp_path: Path, _request: pytest.FixtureRequest) -> ComputeAdapter:
        if isolation == "bwrap" and shutil.which("bwrap") is None:
            pytest.skip("bubblewrap is not installed here (CI installs it)")
        return registry.get("local")(_settings(tmp_path, isolation))

    return make


def _ray(tmp_path: Path, _request: pytest.FixtureRequest) -> ComputeAdapter:
    # Host actors run in Ray: the module's `ray_runtime` fixture has connected this process.
    settings = _settings(tmp_path).model_copy(update={"ray_namespace": "cerver-test"})
    return registry.get("ray")(settings)


def _e2b(tmp_path: Path, request: pytest.FixtureRequest) -> ComputeAdapter:
    fake: fake_e2b.FakeProcess = request.getfixturevalue("e2b_contract_fake")
    settings = _settings(tmp_path).model_copy(
        update={"e2b_api_url": fake.url, "e2b_sandbox_url": fake.env["CERVER_E2B_SANDBOX_URL"]}
    )
    return registry.get("e2b")(settings, {"e2b_api_key": "e2b_contract_key"})


@pytest.fixture(scope="module")
def p69_server() -> Iterator[tuple[str, str]]:
    """A second `cerver serve` on loopback: the p69 adapter's remote."""
    import os

    from tests.conftest import free_port, make_home
    from tests.serve_process import start_server, stop_server

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env |= {"CERVER_HOME": str(make_home()), "CERVER_SESSION_POOL_SIZE": "0"}
    proc, token = start_server(env, port)
    yield f"http://127.0.0.1:{port}", token
    stop_server(proc)


def _p69(tmp_path: Path, request: pytest.FixtureRequest) -> ComputeAdapter:
    url, token = request.getfixturevalue("p69_server")
    settings = _settings(tmp_path).model_copy(update={"p69_base_url": url})
    return registry.get("p69")(settings, {"api_key": token})


# --- issue 11 (cloud): the vercel adapter through tests/fakes/vercel.py ---
@pytest.fixture(scope="module")
def vercel_contract_fake() -> Iterator[str]:
    with start_fake("vercel") as url:
        yield url
    # (what the fake received is checked by tests/integration/test_vercel.py)


def _vercel(tmp_path: Path, request: pytest.FixtureRequest) -> ComputeAdapter:
    url: str = request.getfixturevalue("vercel_contract_fake")
    settings = _settings(tmp_path).model_copy(update={"vercel_api_url": url})
    return registry.get("vercel")(settings, {"vercel_token": "vercel_contract_token"})


# --- issue 11 (cloud): the daytona adapter through tests/fakes/daytona.py ---
DAYTONA_KEY = "daytona_contract_key"


@pytest.fixture(scope="module")
def daytona_contract_fake() -> Iterator[str]:
    with start_fake("daytona") as url:
        yield url
        received = httpx.get(f"{url.removesuffix('/api')}/_fake/requests").json()
    # What Daytona saw: the account's key on every control-plane and toolbox call
    # (HTTP and WebSocket alike), and each kind of call the adapter makes.
    assert received and all(r["key"] == DAYTONA_KEY for r in received)
    kinds = {(r["method"], r["path"].rsplit("/", 1)[-1]) for r in received}
    assert {("POST", "sandbox"), ("WS", "execute"), ("WS", "logs"), ("POST", "exec")} <= kinds
    assert any(r["method"] == "DELETE" and r["path"].startswith("/api/sandbox/") for r in received)


def _daytona(tmp_path: Path, request: pytest.FixtureRequest) -> ComputeAdapter:
    url: str = request.getfixturevalue("daytona_contract_fake")
    settings = _settings(tmp_path).model_copy(update={"daytona_api_url": url})
    return registry.get("daytona")(settings, {"daytona_api_key": DAYTONA_KEY})


# What a provider does not keep, with the reason: its case of that test is skipped.
LACKS: dict[str, dict[str, str]] = {
    "vercel": {
        "python_state": "each Vercel run is a new process: files persist, Python variables "
        "do not (docs/providers.md)",
    },
}


def lacks(adapter: ComputeAdapter, feature: str) -> None:
    reason = LACKS.get(adapter.name, {}).get(feature)
    if reason is not None:
        pytest.skip(f"{adapter.name}: {reason}")


# Contract cases: (provider, factory). A provider may have several (e.g. isolation modes).
CASES: dict[str, tuple[str, Factory]] = {
    "local-bwrap": ("local", _local("bwrap")),
    "local-rlimits": ("local", _local("rlimits")),
    "ray": ("ray", _ray),
    "e2b": ("e2b", _e2b),
    "p69": ("p69", _p69),
    "vercel": ("vercel", _vercel),
    "daytona": ("daytona", _daytona),
}


def _case_ids() -> list[str]:
    ids: list[str] = []
    for name in registry.names():
        ids += [case for case, (provider, _) in CASES.items() if provider == name] or [name]
    return ids


@pytest.fixture(params=_case_ids())
async def adapter(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ComputeAdapter]:
    case = str(request.param)
    if case not in CASES:
        pytest.skip(f"provider {case!r} has no contract fixture in CASES yet")
    provider, factory = CASES[case]
    instance = factory(tmp_path, request)
    assert instance.name == provider
    yield instance
    await instance.close()


@pytest.fixture
async def sandbox(adapter: ComputeAdapter) -> AsyncIterator[SandboxRecord]:
    record = await adapter.create_sandbox(SandboxSpec(account_id="acct_contract"))
    yield record
    await adapter.delete_sandbox(record)


async def test_create_gives_a_storable_record(
    adapter: ComputeAdapter, sandbox: SandboxRecord
) -> None:
    assert sandbox.provider == adapter.name
    assert sandbox.sandbox_id
    assert sandbox.isolation != "none"
    again = SandboxRecord.model_validate_json(sandbox.model_dump_json())
    assert again == sandbox
    assert await adapter.is_alive(again)


@pytest.mark.parametrize("language,code,out", [
    ("shell", "echo hello", "hello\n"),
    ("python", "print('hello')", "hello\n"),
    ("node", "console.log('hello')", "hello\n"),
])  # fmt: skip
async def test_run_each_language(
    adapter: ComputeAdapter, sandbox: SandboxRecord, language: str, code: str, out: str
) -> None:
    result = await adapter.run(sandbox, ExecRequest(code=code, language=language))  # type: ignore[arg-type]
    assert result.stdout == out
    assert result.exit_code == 0 and not result.timed_out
    assert result.duration_ms > 0


async def test_stdout_stderr_and_exit_codes(
    adapter: ComputeAdapter, sandbox: SandboxRecord
) -> None:
    result = await adapter.run(sandbox, ExecRequest(code="echo out; echo err >&2; exit 7"))
    assert (result.stdout, result.stderr, result.exit_code) == ("out\n", "err\n", 7)
    failed = await adapter.run(
        sandbox, ExecRequest(code="raise ValueError('bad')", language="python")
    )
    assert failed.exit_code == 1
    assert failed.error is not None and "ValueError" in failed.error


async def test_python_keeps_state(adapter: ComputeAdapter, sandbox: SandboxRecord) -> None:
    lacks(adapter, "python_state")
    await adapter.run(sandbox, ExecRequest(code="counter = 10", language="python"))
    result = await adapter.run(sandbox, ExecRequest(code="print(counter + 1)", language="python"))
    assert result.stdout == "11\n"


async def test_stream_ends_with_exit(adapter: ComputeAdapter, sandbox: SandboxRecord) -> None:
    events = [e async for e in adapter.run_stream(sandbox, ExecRequest(code="echo a; echo b >&2"))]
    assert events[-1].type == "exit" and events[-1].result is not None
    assert all(e.type != "exit" for e in events[:-1])
    assert "".join(e.data for e in events if e.type == "stdout") == "a\n"
    assert "".join(e.data for e in events if e.type == "stderr") == "b\n"
    assert events[-1].result.stdout == "a\n"


async def test_timeout(adapter: ComputeAdapter, sandbox: SandboxRecord) -> None:
    result = await adapter.run(sandbox, ExecRequest(code="sleep 30", timeout_s=1))
    assert result.timed_out
    assert "timed out" in result.stderr
    assert result.error is not None and "timed out" in result.error


async def test_install(adapter: ComputeAdapter, sandbox: SandboxRecord) -> None:
    with pytest.raises(BadRequest):
        await adapter.install_package(sandbox, InstallRequest(package="--index-url=http://x"))
    missing = "cerver-contract-missing-" + secrets.token_hex(4)
    result = await adapter.install_package(sandbox, InstallRequest(package=missing, timeout_s=60))
    assert result.success is False and result.output


async def test_files_round_trip(adapter: ComputeAdapter, sandbox: SandboxRecord) -> None:
    blob = secrets.token_bytes(4096) + b"\x00\xff"
    await adapter.write_file(sandbox, "data/blob.bin", blob)
    assert await adapter.read_file(sandbox, "data/blob.bin") == blob
    with pytest.raises(CerverError) as info:
        await adapter.read_file(sandbox, "../outside")
    assert info.value.status == 400


async def test_state(adapter: ComputeAdapter, sandbox: SandboxRecord) -> None:
    state = await adapter.get_state(sandbox)
    assert state.status == "running" and state.sandbox_id == sandbox.sandbox_id
    updated = await adapter.set_state(sandbox, {"step": 2, "tags": ["a"]})
    assert updated.user_state == {"step": 2, "tags": ["a"]}
    assert (await adapter.get_state(sandbox)).user_state == {"step": 2, "tags": ["a"]}


async def test_delete_twice(adapter: ComputeAdapter) -> None:
    record = await adapter.create_sandbox(SandboxSpec(account_id="acct_contract"))
    await adapter.delete_sandbox(record)
    await adapter.delete_sandbox(record)
    assert not await adapter.is_alive(record)
