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
    await adapter.run(sandbox, ExecRequest(code="true"))  # the supervisor's start: not in it
    await asyncio.sleep(3 * disk.MIN_POLL_S)  # the walk after that run: done
    out = await adapter.run(
        sandbox,
        ExecRequest(
            code="fallocate -l 20M a 2>/dev/null || head -c 20000000 /dev/zero > a; echo short"
        ),
    )
    # On a loaded machine the run may outlast the first measurement (0.1 s) and be
    # stopped in flight instead, which is right too; either way the sandbox is over.
    assert out.stdout == "short\n" or "passed its disk budget" in out.stderr, out
    for _ in range(100):
        if adapter._disk[sandbox.sandbox_id].over:
            break
        await asyncio.sleep(0.02)
    assert adapter._disk[sandbox.sandbox_id].over
    with pytest.raises(PayloadTooLarge):
        await adapter.write_file(sandbox, "more", b"x")
    out = await adapter.run(
        sandbox, ExecRequest(code="head -c 2000000 /dev/zero > b; sleep 1; echo grew")
    )
    assert out.exit_code != 0 and "grew" not in out.stdout
    out = await adapter.run(sandbox, ExecRequest(code="rm a b; echo shrunk"))
    assert out.stdout == "shrunk\n"


# --------------------------------------------------------------------------- coalescing


def _sandbox_disk(path: Path, reasons: list[str], files: int = 100) -> disk.SandboxDisk:
    async def on_over(reason: str) -> None:
        reasons.append(reason)

    return disk.SandboxDisk(disk.Budget(MIB, files), str(path), on_over)


async def test_back_to_back_runs_share_their_walks(tmp_path: Path) -> None:
    """50 short runs in a row: not a walk each (nor a task each), a few in all."""
    reasons: list[str] = []
    sandbox_disk = _sandbox_disk(tmp_path, reasons)
    before = len(asyncio.all_tasks())
    loop = asyncio.get_running_loop()
    started = loop.time()
    for _ in range(50):
        async with sandbox_disk.watch():
            await asyncio.sleep(0.001)
        assert len(asyncio.all_tasks()) <= before + 1  # at most the one walk in flight
    elapsed = loop.time() - started
    await asyncio.sleep(3 * disk.MIN_POLL_S)
    # one walk right after the first run, then at most one per MIN_POLL_S, and the last
    assert 1 <= sandbox_disk.walks <= 2 + elapsed / disk.MIN_POLL_S, (sandbox_disk.walks, elapsed)
    quiet = sandbox_disk.walks
    await asyncio.sleep(3 * disk.MIN_POLL_S)
    assert sandbox_disk.walks == quiet  # no run, nothing written: no walk
    assert reasons == [] and not sandbox_disk.over
    sandbox_disk.close()


def test_walks_are_scheduled_on_uvloop_too(tmp_path: Path) -> None:
    """Ray's actors and Serve's replicas run on uvloop, whose timer handles have no
    ``when()``: a run's end re-schedules the walk its start asked for."""
    import uvloop

    async def runs() -> None:
        sandbox_disk = _sandbox_disk(tmp_path, [])
        for _ in range(3):
            async with sandbox_disk.watch():
                await asyncio.sleep(0.001)
        await asyncio.sleep(3 * disk.MIN_POLL_S)
        assert sandbox_disk.walks >= 1
        sandbox_disk.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(runs())


async def test_runs_between_two_turns_of_the_loop_make_one_walk(tmp_path: Path) -> None:
    """Whatever the machine's load: 50 runs that end before the loop turns, one walk."""
    sandbox_disk = _sandbox_disk(tmp_path, [])
    for _ in range(50):
        async with sandbox_disk.watch():
            pass  # (entering and leaving a watch never yields while the sandbox is not over)
    await asyncio.sleep(3 * disk.MIN_POLL_S)
    assert sandbox_disk.walks == 1
    sandbox_disk.close()


async def test_a_shared_walk_still_stops_a_run_that_passes_the_budget(tmp_path: Path) -> None:
    reasons: list[str] = []
    sandbox_disk = _sandbox_disk(tmp_path, reasons)
    for _ in range(20):  # short runs before it: their walks must not delay its measurement
        async with sandbox_disk.watch():
            pass
    async with sandbox_disk.watch() as watch:
        (tmp_path / "big").write_bytes(b"x" * (2 * MIB))
        for _ in range(100):  # a run that goes on: stopped at the next walk
            if reasons:
                break
            await asyncio.sleep(0.01)
    assert reasons == ["the workspace passed its disk budget of 1 MiB"]
    assert watch.tripped == reasons[0] and sandbox_disk.over
    sandbox_disk.close()


async def test_a_short_run_past_the_budget_is_known_after_it(tmp_path: Path) -> None:
    """Between runs nothing is killed, but the sandbox is marked over, and its next run
    is measured from its start (may shrink, never grow)."""
    reasons: list[str] = []
    sandbox_disk = _sandbox_disk(tmp_path, reasons)
    async with sandbox_disk.watch():  # walked once right after (not 0.1 s later)
        pass
    async with sandbox_disk.watch():  # this one waits for the spacing
        (tmp_path / "big").write_bytes(b"x" * (2 * MIB))
    for _ in range(100):
        if sandbox_disk.over:
            break
        await asyncio.sleep(0.01)
    assert sandbox_disk.over and reasons == []
    async with sandbox_disk.watch() as watch:
        assert watch.allowed is not None and watch.allowed.bytes >= 2 * MIB
        (tmp_path / "big").unlink()
    for _ in range(100):
        if not sandbox_disk.over:
            break
        await asyncio.sleep(0.01)
    assert not sandbox_disk.over and reasons == []
    sandbox_disk.close()


async def test_closed_it_walks_no_more(tmp_path: Path) -> None:
    sandbox_disk = _sandbox_disk(tmp_path, [])
    async with sandbox_disk.watch():
        pass
    sandbox_disk.close()
    walks = sandbox_disk.walks
    async with sandbox_disk.watch():
        pass
    await asyncio.sleep(2 * disk.MIN_POLL_S)
    assert sandbox_disk.walks <= walks + 1  # at most the one already in flight


async def test_back_to_back_runs_in_a_real_sandbox_walk_a_few_times(
    adapter: LocalAdapter, sandbox: SandboxRecord
) -> None:
    loop = asyncio.get_running_loop()
    await adapter.run(sandbox, ExecRequest(code="true"))  # the supervisor starts
    await asyncio.sleep(2 * disk.MIN_POLL_S)
    sandbox_disk = adapter._disk[sandbox.sandbox_id]
    walks, started = sandbox_disk.walks, loop.time()
    for _ in range(50):
        assert (await adapter.run(sandbox, ExecRequest(code="true"))).exit_code == 0
    elapsed = loop.time() - started
    await asyncio.sleep(3 * disk.MIN_POLL_S)
    made = sandbox_disk.walks - walks
    assert 1 <= made <= 2 + elapsed / disk.MIN_POLL_S, (made, elapsed)
    assert made < 25, made
