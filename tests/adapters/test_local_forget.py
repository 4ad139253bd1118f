"""A hibernated session leaves nothing behind in the process that served it: after
``suspend`` + ``forget`` the local adapter holds no state, no process and no open file of
the sandbox, and the sandbox (its files) is still there for the next process."""

from __future__ import annotations

import os

import pytest

from cerver.adapters.base import SandboxRecord
from cerver.adapters.local import LocalAdapter

from .test_local_fastpath import _our_infra_processes
from .test_local_sandbox import _eventually_empty, run

pytestmark = pytest.mark.timeout(60)


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_forget_after_suspend_keeps_nothing_in_memory_and_the_files_stay(
    adapter: LocalAdapter, sandbox: SandboxRecord
) -> None:
    assert (await run(adapter, sandbox, "echo kept > f.txt")).exit_code == 0
    assert (await run(adapter, sandbox, "y = 2", "python")).exit_code == 0
    assert adapter.sandboxes_in_memory() == {sandbox.sandbox_id}
    await adapter.suspend(sandbox)
    await adapter.forget(sandbox)
    assert adapter.sandboxes_in_memory() == set()
    assert await _eventually_empty(_our_infra_processes) == []
    # The next process to serve it (here: the same instance, starting afresh) finds its files.
    assert (await run(adapter, sandbox, "cat f.txt")).stdout == "kept\n"
    py = await run(adapter, sandbox, "print('y' in globals())", "python")
    assert py.stdout == "False\n"
    assert adapter.sandboxes_in_memory() == {sandbox.sandbox_id}


async def test_forget_stops_what_still_runs(adapter: LocalAdapter, sandbox: SandboxRecord) -> None:
    """Forgetting a sandbox that was not suspended first must not leave its processes
    running without a handle (they could never be stopped again from this process)."""
    assert (await run(adapter, sandbox, "true")).exit_code == 0
    assert _our_infra_processes() != []
    await adapter.forget(sandbox)
    assert adapter.sandboxes_in_memory() == set()
    assert await _eventually_empty(_our_infra_processes) == []


async def test_many_hibernations_leave_no_open_files(
    adapter: LocalAdapter, new_sandbox: object
) -> None:
    """Open fds of the serving process stay flat however many sandboxes slept in it."""
    make = new_sandbox
    first = await make()  # type: ignore[operator]
    await run(adapter, first, "true")
    await adapter.suspend(first)
    await adapter.forget(first)
    baseline = _fds()
    for _ in range(8):
        record = await make()  # type: ignore[operator]
        assert (await run(adapter, record, "echo hi > f.txt")).exit_code == 0
        await adapter.suspend(record)
        await adapter.forget(record)
    assert await _eventually_empty(_our_infra_processes) == []
    assert adapter.sandboxes_in_memory() == set()
    assert _fds() <= baseline
