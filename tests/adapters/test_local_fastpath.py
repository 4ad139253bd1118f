"""The local adapter's fast path: runs through the per-sandbox supervisor, and the warm pool."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from cerver.adapters.base import ExecRequest, SandboxRecord, SandboxSpec
from cerver.adapters.local import LocalAdapter, LocalSandboxData
from cerver.config import Settings

from .conftest import IS_ROOT, make_settings
from .test_local_sandbox import (
    INFRA_MARKER,
    _eventually_empty,
    _processes_of_uid,
    _processes_with,
    _sleep_marker,
    run,
)

pytestmark = pytest.mark.timeout(30)

SPEC = SandboxSpec(account_id="acct_fast")


def _parents(pid: int) -> list[int]:
    """``pid``'s parent, grandparent, ... up to (not including) init."""
    chain: list[int] = []
    while pid > 1 and pid not in chain:
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                raw = fh.read()
        except OSError:
            break
        pid = int(raw[raw.rfind(b")") + 2 :].split()[1])
        chain.append(pid)
    return chain


def _our_infra_processes() -> list[int]:
    """Supervisors / interpreters (and their bwrap) started by this test process's own
    adapters: every process between them and us is one of them. Not those of a Ray worker
    this process started for another test (a server's warm pool), which descend from us
    through Ray's processes."""
    me = os.getpid()
    infra = set(_processes_with(INFRA_MARKER.decode())) - {me}
    found = []
    for pid in infra:
        chain = _parents(pid)
        if me in chain and all(p in infra for p in chain[: chain.index(me)]):
            found.append(pid)
    return found


def _supervisor_of(record: SandboxRecord) -> int:
    """The host pid of the process our adapter spawned for this sandbox's supervisor
    (bwrap, or the supervisor itself in rlimits mode): our child, in the workspace (rlimits)
    or binding it (bwrap, whose own cwd is fixed at /)."""
    workspace = os.path.realpath(LocalSandboxData.model_validate(record.data).workspace)
    me = os.getpid()
    for pid in _our_infra_processes():
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                raw = fh.read()
            cwd = os.readlink(f"/proc/{pid}/cwd")
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
        except OSError:
            continue
        ppid = int(raw[raw.rfind(b")") + 2 :].split()[1])
        if ppid == me and (cwd == workspace or workspace.encode() in argv):
            return pid
    raise AssertionError("no supervisor process found for the sandbox")


async def _until(predicate: Callable[[], bool], timeout_s: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


# --------------------------------------------------------------------------- runs


async def test_shell_runs_are_concurrent_and_do_not_mix(
    adapter: LocalAdapter, sandbox: SandboxRecord
) -> None:
    started = time.monotonic()
    slow = [run(adapter, sandbox, f"sleep 1; echo slow{i}") for i in range(4)]
    fast = [run(adapter, sandbox, f"echo out{i}; echo err{i} >&2; exit {i % 7}") for i in range(20)]
    results = await asyncio.gather(*slow, *fast)
    assert [r.stdout for r in results[:4]] == [f"slow{i}\n" for i in range(4)]
    assert time.monotonic() - started < 3.5
    for i, result in enumerate(results[4:]):
        assert (result.stdout, result.stderr, result.exit_code) == (f"out{i}\n", f"err{i}\n", i % 7)


async def test_shell_output_is_streamed_as_it_comes(
    adapter: LocalAdapter, sandbox: SandboxRecord
) -> None:
    seen: dict[str, float] = {}
    request = ExecRequest(code="echo one; sleep 0.5; echo two >&2")
    async for event in adapter.run_stream(sandbox, request):
        for word in ("one", "two"):
            if word in event.data:
                seen.setdefault(f"{event.type}:{word}", time.monotonic())
    assert set(seen) == {"stdout:one", "stderr:two"}
    assert seen["stderr:two"] - seen["stdout:one"] > 0.3


async def test_env_and_cwd_are_per_run(
    adapter: LocalAdapter, new_sandbox: Callable[..., object]
) -> None:
    record = await new_sandbox(env={"FROM_SPEC": "spec"})  # type: ignore[misc]
    await adapter.write_file(record, "sub/marker.txt", b"here")
    first = await run(adapter, record, "echo $FROM_SPEC $ONE; ls", env={"ONE": "1"}, cwd="sub")
    assert first.stdout == "spec 1\nmarker.txt\n", first.stderr
    second = await run(adapter, record, 'echo "[$ONE]"; pwd')
    assert second.stdout.splitlines()[0] == "[]"
    assert not second.stdout.rstrip().endswith("/sub")


async def test_timeout_kills_the_tree_and_keeps_the_supervisor(
    adapter: LocalAdapter, sandbox: SandboxRecord
) -> None:
    await run(adapter, sandbox, "true")
    supervisor = _supervisor_of(sandbox)
    marker = _sleep_marker()
    result = await run(adapter, sandbox, f"sleep {marker} & sleep {marker}; echo no", timeout_s=1)
    assert result.timed_out and result.exit_code == 124
    assert "timed out" in result.stderr and "no" not in result.stdout
    assert await _eventually_empty(lambda: _processes_with(marker)) == []
    assert _supervisor_of(sandbox) == supervisor
    assert (await run(adapter, sandbox, "echo after")).stdout == "after\n"


async def test_supervisor_death_is_survived(adapter: LocalAdapter, sandbox: SandboxRecord) -> None:
    assert (await run(adapter, sandbox, "x = 1", "python")).exit_code == 0
    marker = _sleep_marker()
    request = ExecRequest(code=f"echo start; sleep {marker}", timeout_s=20)
    stream = adapter.run_stream(sandbox, request)
    first = await anext(stream)  # type: ignore[call-overload]
    assert "start" in first.data
    os.kill(_supervisor_of(sandbox), signal.SIGKILL)
    events = [event async for event in stream]  # type: ignore[attr-defined]
    assert events[-1].type == "exit" and events[-1].result is not None
    assert events[-1].result.exit_code == 137 and not events[-1].result.timed_out
    assert await _eventually_empty(lambda: _processes_with(marker)) == []
    shell = await run(adapter, sandbox, "echo back")
    assert shell.stdout == "back\n" and not shell.interpreter_restarted
    py = await run(adapter, sandbox, "print('x' in globals())", "python")
    assert py.interpreter_restarted and "state was lost" in py.stderr
    assert py.stdout == "False\n"


async def test_suspend_stops_processes_and_the_next_run_restarts(
    adapter: LocalAdapter, sandbox: SandboxRecord
) -> None:
    await run(adapter, sandbox, "y = 2", "python")
    await adapter.suspend(sandbox)
    assert await _eventually_empty(_our_infra_processes) == []
    assert (await run(adapter, sandbox, "echo up")).stdout == "up\n"
    py = await run(adapter, sandbox, "print('y' in globals())", "python")
    assert py.interpreter_restarted and py.stdout == "False\n"


# --------------------------------------------------------------------------- warm pool


@pytest.fixture
async def default_adapter(home: Path) -> AsyncIterator[LocalAdapter]:
    """Pool mechanics do not depend on the isolation mode: one run, in the default one."""
    instance = LocalAdapter(make_settings(home, "auto"))
    yield instance
    await instance.close()


async def test_pool_take_and_refill(default_adapter: LocalAdapter) -> None:
    await default_adapter.warm(2)
    assert await _until(lambda: default_adapter.pool_size() == 2)
    record = await default_adapter.create_sandbox(SPEC.model_copy(update={"env": {"K": "v"}}))
    assert default_adapter.pool_size() == 1
    state = await default_adapter.get_state(record)
    assert state.details["supervisor"] and state.details["python_interpreter"]
    assert Path(LocalSandboxData.model_validate(record.data).workspace).is_dir()
    assert (await run(default_adapter, record, "echo $K")).stdout == "v\n"
    py = await run(default_adapter, record, "import os; print(os.environ['K'])", "python")
    assert py.stdout == "v\n" and not py.interpreter_restarted
    assert await _until(lambda: default_adapter.pool_size() == 2)
    await default_adapter.delete_sandbox(record)


async def test_incompatible_spec_is_provisioned_fresh(default_adapter: LocalAdapter) -> None:
    await default_adapter.warm(1)
    assert await _until(lambda: default_adapter.pool_size() == 1)
    record = await default_adapter.create_sandbox(SPEC.model_copy(update={"network": True}))
    assert default_adapter.pool_size() == 1
    assert LocalSandboxData.model_validate(record.data).network
    small = await default_adapter.create_sandbox(
        SandboxSpec(account_id="a", resources={"memory_mb": 256})
    )
    assert default_adapter.pool_size() == 1
    assert LocalSandboxData.model_validate(small.data).limits.memory_mb == 256
    for made in (record, small):
        assert (await run(default_adapter, made, "echo ok")).stdout == "ok\n"
        await default_adapter.delete_sandbox(made)


async def test_burst_larger_than_the_pool_all_succeed(default_adapter: LocalAdapter) -> None:
    await default_adapter.warm(2)
    assert await _until(lambda: default_adapter.pool_size() == 2)
    records = await asyncio.gather(*(default_adapter.create_sandbox(SPEC) for _ in range(6)))
    assert len({r.sandbox_id for r in records}) == 6
    results = await asyncio.gather(*(run(default_adapter, r, "echo ok") for r in records))
    assert [r.stdout for r in results] == ["ok\n"] * 6
    for record in records:
        await default_adapter.delete_sandbox(record)


async def test_pool_sandboxes_are_isolated_from_each_other(
    adapter: LocalAdapter, isolation: str
) -> None:
    await adapter.warm(2)
    assert await _until(lambda: adapter.pool_size() == 2)
    one, two = await adapter.create_sandbox(SPEC), await adapter.create_sandbox(SPEC)
    d1, d2 = (LocalSandboxData.model_validate(r.data) for r in (one, two))
    assert d1.workspace != d2.workspace
    await adapter.write_file(one, "secret.txt", b"one-secret")
    if IS_ROOT:
        assert d1.uid != d2.uid
        assert (await run(adapter, two, "id -u")).stdout == f"{d2.uid}\n"
    if IS_ROOT or isolation == "bwrap":
        peek = await run(adapter, two, f"cat {d1.workspace}/secret.txt")
        assert peek.exit_code != 0 and "one-secret" not in peek.stdout
    for record in (one, two):
        await adapter.delete_sandbox(record)


async def test_close_leaves_no_process_and_no_directory(settings: Settings) -> None:
    adapter = LocalAdapter(settings)
    await adapter.warm(3)
    assert await _until(lambda: adapter.pool_size() == 3)
    taken = await adapter.create_sandbox(SPEC)
    assert (await run(adapter, taken, "echo hi")).stdout == "hi\n"
    pooled_uids = [
        p.stat().st_uid for p in settings.sandboxes_dir.iterdir() if p.name != taken.sandbox_id
    ]
    await adapter.close()
    assert [p.name for p in settings.sandboxes_dir.iterdir()] == [taken.sandbox_id]
    assert await _eventually_empty(_our_infra_processes) == []
    if IS_ROOT:
        for uid in pooled_uids:
            assert await _eventually_empty(lambda uid=uid: _processes_of_uid(uid)) == []
    fresh = LocalAdapter(settings)
    await fresh.delete_sandbox(taken)
    await fresh.close()
    assert list(settings.sandboxes_dir.iterdir()) == []
