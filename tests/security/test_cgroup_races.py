"""A sandbox start whose cgroup vanishes (issue 16's "Exception occurred in preexec_fn").

Under load, 2 of ~10,000 starts failed inside the child's setup with nothing saying why.
Now the failed step and its errno come back to the parent; a start whose cgroup was
removed between the parent's check and the child's join (another server's ``sweep``, a
concurrent ``release``) makes the cgroup again and tries once more; it never runs a
process outside a cgroup. Real processes, real cgroups (skipped where none are writable).
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from cerver.adapters.base import ExecRequest, SandboxSpec
from cerver.adapters.local import LocalAdapter, cgroups, isolation
from cerver.adapters.local.cgroups import SandboxCgroups
from cerver.adapters.local.isolation import ChildSetup, Launch
from cerver.adapters.local.layout import Limits, LocalSandboxData
from cerver.adapters.local.spawning import spawn
from cerver.config import Settings
from cerver.errors import ProviderError
from tests.adapters.conftest import make_settings

pytestmark = pytest.mark.timeout(60)
LIMITS = Limits(cpu_s=60, memory_mb=4096, fsize_mb=16, nproc=4096, total_memory_mb=256,
                pids_max=64, cpus=0.5)  # fmt: skip


def _launch(workspace: Path, procs: tuple[str, ...], **setup: Any) -> Launch:
    child = ChildSetup(limits=LIMITS, cgroup_procs=procs, **setup)
    argv = ["/bin/sh", "-c", "cat /proc/self/cgroup"]
    return Launch(argv, {"PATH": "/usr/bin:/bin"}, str(workspace), child, str(workspace))


def _cgroups_or_skip(settings: Settings) -> SandboxCgroups:
    if os.geteuid() != 0 or cgroups.probe(settings)[0] is None:
        pytest.skip("no writable cgroups here")
    return SandboxCgroups(settings)


@pytest.fixture
def node(tmp_path: Path) -> Settings:
    home = tmp_path / "home"
    home.mkdir()
    return make_settings(home, "rlimits")


# --------------------------------------------------------------------------- diagnosis


async def test_a_failed_cgroup_join_says_so_with_its_errno(tmp_path: Path) -> None:
    missing = str(tmp_path / "sbx_gone" / "cgroup.procs")
    with pytest.raises(ProviderError) as caught:
        await spawn(_launch(tmp_path, (missing,)))
    assert "cgroup join failed: ENOENT (No such file or directory)" in str(caught.value)
    assert caught.value.details == {"step": "cgroup join", "errno": "ENOENT"}
    assert missing not in str(caught.value)  # the host's layout stays in the server's log


async def test_a_later_step_is_named_too(tmp_path: Path) -> None:
    gone = tmp_path / "workspace-removed"
    with pytest.raises(ProviderError) as caught:
        await spawn(_launch(tmp_path, (), chdir=str(gone)))
    assert "chdir into the workspace failed: ENOENT" in str(caught.value)


async def test_without_a_report_pipe_the_setup_still_just_fails(tmp_path: Path) -> None:
    """``ChildSetup`` used directly (no ``SetupReport``) behaves as before: it raises."""
    setup = ChildSetup(limits=LIMITS, cgroup_procs=(str(tmp_path / "none"),))
    with pytest.raises(FileNotFoundError):
        setup()  # (in this process: the first step fails before anything changes)


async def test_the_report_pipe_is_closed_after_every_start(tmp_path: Path) -> None:
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(5):
        proc = await spawn(_launch(tmp_path, ()))
        await proc.communicate()
        with pytest.raises(ProviderError):
            await spawn(_launch(tmp_path, (str(tmp_path / "none"),)))
    assert len(os.listdir("/proc/self/fd")) <= before


# --------------------------------------------------------------------------- the race


async def test_a_cgroup_removed_before_the_join_is_made_again_once(
    node: Settings, tmp_path: Path
) -> None:
    """What a foreign sweep does between the parent's check and the child's join."""
    groups = _cgroups_or_skip(node)
    rebuilt = 0

    def build() -> Launch:
        nonlocal rebuilt
        rebuilt += 1
        return _launch(tmp_path, groups.procs_files("sbx_race", LIMITS))

    try:
        launch = _launch(tmp_path, groups.procs_files("sbx_race", LIMITS))
        cgroup = groups.get("sbx_race")
        assert cgroup is not None and cgroup.remove()  # swept right after the check
        proc = await spawn(launch, rebuild=build)
        out, _ = await proc.communicate()
        assert proc.returncode == 0 and rebuilt == 1
        again = groups.get("sbx_race")
        assert again is not None and all(d.is_dir() for d in again.dirs)
        assert "/sbx_race" in out.decode()  # it ran in the cgroup made again
        if "pids" in again._backend.enforced:
            assert again.read("pids.max").strip() == "64"  # with its limits
    finally:
        groups.close()


async def test_a_cgroup_that_vanishes_twice_fails_closed(node: Settings, tmp_path: Path) -> None:
    groups = _cgroups_or_skip(node)
    marker = tmp_path / "ran"

    def vanishing() -> Launch:
        procs = groups.procs_files("sbx_twice", LIMITS)
        cgroup = groups.get("sbx_twice")
        assert cgroup is not None and cgroup.remove()
        launch = _launch(tmp_path, procs)
        argv = ["/bin/sh", "-c", f"touch {marker}"]
        return Launch(argv, launch.env, launch.cwd, launch.setup, launch.workspace)

    try:
        with pytest.raises(ProviderError) as caught:
            await spawn(vanishing(), rebuild=vanishing)
        assert caught.value.details == {"step": "cgroup join", "errno": "ENOENT"}
        assert not marker.exists()  # nothing ran outside a cgroup
    finally:
        groups.close()


async def test_no_rebuild_no_retry(node: Settings, tmp_path: Path) -> None:
    groups = _cgroups_or_skip(node)
    try:
        launch = _launch(tmp_path, groups.procs_files("sbx_once", LIMITS))
        cgroup = groups.get("sbx_once")
        assert cgroup is not None and cgroup.remove()
        with pytest.raises(ProviderError, match="cgroup join failed: ENOENT"):
            await spawn(launch)
    finally:
        groups.close()


# --------------------------------------------------------------------------- the adapter


@pytest.fixture(params=["auto", "required"])
async def adapter(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[LocalAdapter]:
    home = tmp_path / "home"
    home.mkdir()
    settings = make_settings(home, "rlimits", cgroups=request.param)
    backend = cgroups.probe(settings)[0] if os.geteuid() == 0 else None
    if backend is None or len(backend.enforced) < 3:
        pytest.skip("no writable cgroups with memory, pids and cpu here")
    instance = LocalAdapter(settings)
    yield instance
    await instance.close()


async def _sandbox(adapter: LocalAdapter) -> Any:
    spec = SandboxSpec.model_validate({"account_id": "acct_test"})
    return await adapter.create_sandbox(spec)


async def test_an_idle_sandbox_swept_by_another_server_runs_again(
    adapter: LocalAdapter, tmp_path: Path
) -> None:
    """The 60 s empty-and-old rule of another server's ``sweep`` does hit a live server's
    idle sandbox (made, no process yet, for over a minute); its next run makes it again."""
    record = await _sandbox(adapter)
    cg = adapter._cgroups.get(record.sandbox_id)
    assert cg is not None and cg.pids() == []
    old = time.time() - 2 * cgroups.STALE_S
    for d in cg.dirs:
        os.utime(d, (old, old))
    other_home = tmp_path / "other"
    other_home.mkdir()
    other_settings = make_settings(other_home, "rlimits")
    other = cgroups.probe(other_settings)[0]
    assert other is not None
    cgroups.sweep(other, other_settings)  # what another server does when it starts
    assert not any(d.exists() for d in cg.dirs)
    out = await adapter.run(record, ExecRequest(code="cat /proc/self/cgroup"))
    assert out.exit_code == 0 and f"/{record.sandbox_id}" in out.stdout
    again = adapter._cgroups.get(record.sandbox_id)
    sup = adapter._live[record.sandbox_id].supervisor
    assert again is not None and sup is not None and sup.pid in again.pids()
    await adapter.delete_sandbox(record)
    other.remove_parents()


def _remove_after_check(adapter: LocalAdapter, times: int) -> list[str]:
    """The adapter's cgroup check, followed by a removal of the cgroup: the window a
    foreign sweep (or a concurrent release) hits, made deterministic."""
    groups = adapter._cgroups
    original: Callable[[str, Limits], tuple[str, ...]] = groups.procs_files
    calls: list[str] = []

    def procs_files(sandbox_id: str, limits: Limits) -> tuple[str, ...]:
        procs = original(sandbox_id, limits)
        calls.append(sandbox_id)
        if len(calls) <= times:
            cgroup = groups.get(sandbox_id)
            assert cgroup is not None and cgroup.remove()
        return procs

    groups.procs_files = procs_files  # type: ignore[method-assign]
    return calls


async def test_a_run_whose_cgroup_vanishes_at_start_retries_into_a_new_one(
    adapter: LocalAdapter,
) -> None:
    record = await _sandbox(adapter)
    calls = _remove_after_check(adapter, times=1)
    out = await adapter.run(record, ExecRequest(code="echo ok"))
    assert (out.exit_code, out.stdout) == (0, "ok\n")
    assert calls == [record.sandbox_id] * 2  # one retry, with the cgroup made again
    cg = adapter._cgroups.get(record.sandbox_id)
    sup = adapter._live[record.sandbox_id].supervisor
    assert cg is not None and sup is not None and sup.pid in cg.pids()
    await adapter.delete_sandbox(record)


async def test_a_run_whose_cgroup_keeps_vanishing_fails_closed(adapter: LocalAdapter) -> None:
    record = await _sandbox(adapter)
    calls = _remove_after_check(adapter, times=2)
    with pytest.raises(ProviderError) as caught:
        await adapter.run(record, ExecRequest(code="echo never"))
    assert "cgroup join failed" in str(caught.value)
    assert len(calls) == 2
    live = adapter._live.get(record.sandbox_id)
    assert live is None or live.supervisor is None or not live.supervisor.alive
    # the next run (the cgroup left alone) works
    assert (await adapter.run(record, ExecRequest(code="echo ok"))).stdout == "ok\n"
    await adapter.delete_sandbox(record)


# --------------------------------------------------------------------------- bwrap probe


async def test_a_failed_bwrap_probe_start_is_not_remembered(node: Settings) -> None:
    """A probe whose child setup failed (here: the workspace it exposes is gone) says
    which step failed, and is probed again next time: not "bwrap does not work" forever."""
    if os.geteuid() != 0:
        pytest.skip("the mount plan (the failing step here) is only applied as root")
    saved = dict(isolation._probe)
    isolation._probe.clear()
    try:
        data = LocalSandboxData(
            workspace=str(node.sandboxes_dir / "sbx_missing"), uid=os.getuid(),
            gid=os.getgid(), dedicated_uid=False, isolation="bwrap", limits=LIMITS,
        )  # fmt: skip
        reason = await isolation.bwrap_unavailable_reason(node, data)
        assert reason is not None and "mount plan failed: ENOENT" in reason
        assert "result" not in isolation._probe
    finally:
        isolation._probe.clear()
        isolation._probe.update(saved)
