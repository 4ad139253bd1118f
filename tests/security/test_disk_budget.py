"""The workspace disk budget (adapters/local/disk.py) with the real local adapter."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from cerver.adapters.base import ExecRequest, SandboxRecord
from cerver.adapters.local import LocalAdapter, disk
from cerver.config import Settings
from cerver.errors import NotFound, PayloadTooLarge
from tests.adapters.conftest import make_settings

pytestmark = pytest.mark.timeout(90)
MIB = 1024 * 1024


@pytest.fixture
def settings(home: Path, isolation: str) -> Settings:
    return make_settings(
        home, isolation, sandbox_disk_mb=16, sandbox_disk_files=300, max_file_bytes=4 * MIB
    )


def test_measure_counts_blocks_once_and_follows_no_link(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"x" * 100_000)
    os.link(tmp_path / "a", tmp_path / "hard")
    (tmp_path / "d").mkdir()
    os.symlink("/usr", tmp_path / "d" / "usr")
    usage = disk.measure(str(tmp_path))
    assert usage.files == 4  # a, hard, d, d/usr
    assert 100_000 <= usage.bytes < 100_000 + 3 * 8192  # a once (and d's block), /usr never


def test_an_over_budget_workspace_may_shrink_never_grow() -> None:
    budget = disk.Budget(10 * MIB, 100)
    start = disk.Usage(12 * MIB, 50)
    assert budget.over(disk.Usage(12 * MIB, 50), start) is None
    assert budget.over(disk.Usage(11 * MIB, 50), start) is None
    assert budget.over(disk.Usage(13 * MIB, 50), start) is not None
    assert budget.over(disk.Usage(9 * MIB, 101)) == "the workspace passed its budget of 100 files"


async def test_a_run_that_fills_past_the_budget_is_killed(
    adapter: LocalAdapter, sandbox: SandboxRecord, settings: Settings
) -> None:
    code = "for i in $(seq 40); do head -c 1000000 /dev/zero > f$i; sleep 0.02; done; echo done"
    out = await adapter.run(sandbox, ExecRequest(code=code, timeout_s=60))
    assert out.exit_code != 0 and "done" not in out.stdout
    assert "passed its disk budget of 16 MiB" in out.stderr
    ws = adapter._data(sandbox).workspace
    used = disk.measure(ws).bytes
    # the watch measures every 0.1 s; the run writes 1 MB per 20 ms
    assert 16 * MIB < used < 28 * MIB, used
    # over budget, it may shrink: rm works, and then it is usable again
    out = await adapter.run(sandbox, ExecRequest(code="rm f*; echo clean"))
    assert out.stdout == "clean\n" and disk.measure(ws).bytes < MIB
    assert (await adapter.run(sandbox, ExecRequest(code="echo ok"))).stdout == "ok\n"


async def test_too_many_files_are_killed(adapter: LocalAdapter, sandbox: SandboxRecord) -> None:
    code = "mkdir m; for i in $(seq 20000); do : > m/$i; done; echo done"
    out = await adapter.run(sandbox, ExecRequest(code=code, timeout_s=60))
    assert out.exit_code != 0 and "done" not in out.stdout
    assert "passed its budget of 300 files" in out.stderr


async def test_the_files_api_refuses_a_write_past_the_budget(
    adapter: LocalAdapter, sandbox: SandboxRecord
) -> None:
    for i in range(3):
        await adapter.write_file(sandbox, f"big{i}", b"x" * (4 * MIB))
    with pytest.raises(PayloadTooLarge, match="disk budget of 16 MiB") as err:
        await adapter.write_file(sandbox, "big3", b"x" * (4 * MIB) + b"y")
    assert err.value.details["setting"] == "CERVER_SANDBOX_DISK_MB"
    with pytest.raises(NotFound):
        await adapter.read_file(sandbox, "big3")


async def test_a_short_run_past_the_budget_is_caught_after_it(
    adapter: LocalAdapter, sandbox: SandboxRecord
) -> None:
    """Ends before the first measurement (0.1 s): measured after its answer; from then the
    sandbox is known to be over, its files-API writes refused, its next run watched from
    its start (it may shrink the workspace, never grow it)."""
    out = await adapter.run(
        sandbox,
        ExecRequest(
            code="fallocate -l 20M a 2>/dev/null || head -c 20000000 /dev/zero > a; echo short"
        ),
    )
    assert out.stdout == "short\n"
    for _ in range(100):
        if sandbox.sandbox_id in adapter._disk_over:
            break
        await asyncio.sleep(0.02)
    assert sandbox.sandbox_id in adapter._disk_over
    with pytest.raises(PayloadTooLarge):
        await adapter.write_file(sandbox, "more", b"x")
    out = await adapter.run(
        sandbox, ExecRequest(code="head -c 2000000 /dev/zero > b; sleep 1; echo grew")
    )
    assert out.exit_code != 0 and "grew" not in out.stdout
    out = await adapter.run(sandbox, ExecRequest(code="rm a b; echo shrunk"))
    assert out.stdout == "shrunk\n"
