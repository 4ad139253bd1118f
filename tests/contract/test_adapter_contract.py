"""One contract suite, run against every registered compute provider.

A provider joins by registering its adapter and adding a factory to ``FACTORIES`` that
builds a ready instance (e.g. pointed at a fake of its HTTP API). A registered provider
without a factory is reported as skipped, with the reason, never silently passed.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path

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

pytestmark = pytest.mark.timeout(60)


def _local(tmp_path: Path) -> ComputeAdapter:
    home = tmp_path / "home"
    home.mkdir()
    settings = Settings(
        home=home,
        database_url=f"sqlite:///{home / 'cerver.db'}",
        output_limit_bytes=64 * 1024,
        max_file_bytes=64 * 1024,
    )
    return registry.get("local")(settings)


FACTORIES: dict[str, Callable[[Path], ComputeAdapter]] = {"local": _local}


@pytest.fixture(params=registry.names())
async def adapter(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ComputeAdapter]:
    name = str(request.param)
    factory = FACTORIES.get(name)
    if factory is None:
        pytest.skip(f"provider {name!r} has no contract fixture in FACTORIES yet")
    instance = factory(tmp_path)
    assert instance.name == name
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
