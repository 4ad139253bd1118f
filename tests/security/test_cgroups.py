"""The per-sandbox cgroup module against this machine's real cgroups (no Ray).

v1 runs wherever its controllers are mounted writable (this machine, CI: root on the same
kind of VM). v2 runs wherever a cgroup2 hierarchy is writable: here it has no controller
delegated (they are all bound to v1), so its make/join/kill/remove run for real and its
limit files are checked against a directory that stands in for a delegated cgroup.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cerver.adapters.base import ExecRequest, SandboxRecord, SandboxSpec
from cerver.adapters.local import LocalAdapter, cgroups
from cerver.adapters.local.cgroups import CgroupLimits
from cerver.adapters.local.isolation import ChildSetup
from cerver.adapters.local.layout import Limits
from cerver.config import Settings
from cerver.errors import ProviderError
from tests.adapters.conftest import make_settings

pytestmark = pytest.mark.timeout(60)
LIMITS = CgroupLimits(memory_bytes=96 * 1024 * 1024, pids=24, cpu_quota_us=50_000)


def _v1(settings: Settings) -> cgroups.V1 | None:
    backend = cgroups.v1_backend(settings, cgroups.key_for(settings))
    if backend is None or os.geteuid() != 0 or cgroups._works(backend) is not None:
        return None
    return backend


def _v2(settings: Settings) -> cgroups.V2 | None:
    backend = cgroups.v2_backend(settings, cgroups.key_for(settings))
    if backend is None or os.geteuid() != 0 or cgroups._works(backend) is not None:
        return None
    return backend


@pytest.fixture
def isolation() -> str:
    return "bwrap"


@pytest.fixture
def settings(tmp_path: Path, isolation: str) -> Settings:
    home = tmp_path / "home"
    home.mkdir()
    return make_settings(home, isolation)


def _use(backend: cgroups.Backend | None, what: str) -> Iterator[Any]:
    if backend is None:
        pytest.skip(f"no writable {what} here")
    yield backend
    backend.remove_parents()
    assert not any(p.exists() for p in backend.parents())


@pytest.fixture
def v1(settings: Settings) -> Iterator[cgroups.V1]:
    yield from _use(_v1(settings), "cgroup v1 controllers")


@pytest.fixture
def v2(settings: Settings) -> Iterator[cgroups.V2]:
    yield from _use(_v2(settings), "cgroup v2 hierarchy")


def spawn_in(cgroup: cgroups.Cgroup, code: str) -> subprocess.Popen[bytes]:
    """A process that joins ``cgroup`` before exec, the way sandboxes do (ChildSetup)."""
    setup = ChildSetup(limits=Limits(cpu_s=60, memory_mb=4096, fsize_mb=16, nproc=4096),
                       cgroup_procs=cgroup.procs_files)  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-c", code], preexec_fn=setup, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def wait_for(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


FORKER = """
import os, time, sys
for _ in range(3):  # children in new sessions: no process-group kill reaches them
    if os.fork() == 0:
        os.setsid(); time.sleep(300); os._exit(0)
print("ready", flush=True); time.sleep(300)
"""


# --------------------------------------------------------------------------- v1


def test_v1_create_sets_the_limits(v1: cgroups.V1) -> None:
    cg = v1.create("sbx_limits", LIMITS)
    try:
        assert cg.read("memory.limit_in_bytes").strip() == str(96 * 1024 * 1024)
        if any((d / "memory.memsw.limit_in_bytes").exists() for d in cg.dirs):
            assert cg.read("memory.memsw.limit_in_bytes").strip() == str(96 * 1024 * 1024)
        assert cg.read("pids.max").strip() == "24"
        assert cg.read("cpu.cfs_quota_us").strip() == "50000"
        assert cg.read("cpu.cfs_period_us").strip() == "100000"
    finally:
        assert cg.remove()
    assert not any(d.exists() for d in cg.dirs)


def test_v1_a_child_joins_before_exec_and_kill_takes_its_escaped_children(
    v1: cgroups.V1,
) -> None:
    cg = v1.create("sbx_kill", LIMITS)
    proc = spawn_in(cg, FORKER)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        members = cg.pids()
        assert proc.pid in members and len(members) == 4  # itself and its 3 children
        for d in cg.dirs:  # in every controller's cgroup
            assert proc.pid in cgroups._pids(d / "cgroup.procs")
        assert cg.kill() is True
        assert proc.wait(5) == -signal.SIGKILL
        wait_for(lambda: not cg.pids())
    finally:
        proc.kill()
        proc.wait()
        assert cg.remove()


def test_v1_pids_max_refuses_forks(v1: cgroups.V1) -> None:
    cg = v1.create("sbx_pids", LIMITS)
    code = """
import os, time
n = 0
try:
    while n < 200:
        if os.fork() == 0:
            time.sleep(30); os._exit(0)
        n += 1
except BlockingIOError as exc:
    print("refused", n, exc.errno, flush=True)
"""
    proc = spawn_in(cg, code)
    try:
        assert proc.stdout is not None
        out = proc.stdout.readline()  # the sleepers hold the pipe: no communicate()
        # 24 tasks: the parent and 23 children, then EAGAIN (errno 11) from the cgroup
        assert out.decode().split() == ["refused", "23", "11"]
        events = dict(line.split() for line in cg.read("pids.events").splitlines())
        assert int(events["max"]) >= 1  # the refusal was the cgroup's, counted there
    finally:
        assert cg.remove()  # kills the 23 sleepers
    assert not any(d.exists() for d in cg.dirs)


def test_v1_memory_limit_oom_kills_inside_only(v1: cgroups.V1) -> None:
    cg = v1.create("sbx_mem", LIMITS)
    proc = spawn_in(cg, "b = b'x' * (200 * 1024 * 1024); print('survived')")
    try:
        out, _ = proc.communicate(timeout=20)
        assert proc.returncode == -signal.SIGKILL and out == b""
        oom = cg.read("memory.oom_control")
        assert "oom_kill 1" in oom, oom
    finally:
        assert cg.remove()


def test_v1_remove_kills_what_is_left(v1: cgroups.V1) -> None:
    cg = v1.create("sbx_left", LIMITS)
    proc = spawn_in(cg, FORKER)
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    assert cg.remove() is True
    assert proc.wait(5) == -signal.SIGKILL
    assert not any(d.exists() for d in cg.dirs)


# --------------------------------------------------------------------------- v2


def test_v2_create_join_kill_remove(v2: cgroups.V2) -> None:
    cg = v2.create("sbx_v2", LIMITS)
    proc = spawn_in(cg, FORKER)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        assert proc.pid in cg.pids() and len(cg.pids()) == 4
        assert (cg.dirs[0] / "cgroup.kill").exists()  # the kill is the kernel's, at once
        assert cg.kill() is True
        assert proc.wait(5) == -signal.SIGKILL
    finally:
        proc.kill()
        proc.wait()
        assert cg.remove()
    assert not cg.dirs[0].exists()


def test_v2_limit_files(tmp_path: Path) -> None:
    """The limit files v2 writes, into a directory that stands in for a delegated cgroup
    (here no controller is delegated to v2, so ``test_v2_create_join_kill_remove`` cannot
    check them on a real one)."""
    backend = cgroups.V2(tmp_path, "", "cerver-test", ("memory", "pids", "cpu"))
    (tmp_path / "cerver-test").mkdir()  # cgroupfs makes these files with the directory
    for d in (tmp_path, tmp_path / "cerver-test"):
        (d / "cgroup.subtree_control").write_text("")
    backend.prepare()
    assert (tmp_path / "cgroup.subtree_control").read_text() == "+memory +pids +cpu"
    assert (tmp_path / "cerver-test" / "cgroup.subtree_control").read_text() == (
        "+memory +pids +cpu"
    )
    leaf = tmp_path / "cerver-test" / "sbx_x"
    leaf.mkdir()
    for name in ("memory.max", "memory.swap.max", "pids.max", "cpu.max"):
        (leaf / name).write_text("")  # (cgroupfs files take a write whole)
    backend.set_limits((leaf,), LIMITS)
    assert (leaf / "memory.max").read_text() == str(96 * 1024 * 1024)
    assert (leaf / "memory.swap.max").read_text() == "0"
    assert (leaf / "pids.max").read_text() == "24"
    assert (leaf / "cpu.max").read_text() == "50000 100000"


# --------------------------------------------------------------------------- probing


def test_probe_picks_a_backend_and_says_what_it_enforces(settings: Settings) -> None:
    backend, note = cgroups.probe(settings)
    if _v1(settings) is None and _v2(settings) is None:
        assert backend is None and "none usable" in note
        return
    assert backend is not None and note.startswith("sandbox cgroups: cgroup")
    assert set(backend.enforced) <= {"memory", "pids", "cpu"}
    assert all(c in note for c in backend.enforced)
    backend.remove_parents()


def test_off_uses_none(settings: Settings) -> None:
    off = settings.model_copy(update={"cgroups": "off"})
    assert cgroups.probe(off) == (None, "sandbox cgroups: off (CERVER_CGROUPS=off)")
    assert cgroups.require(off) is None


def test_required_fails_closed_without_them(settings: Settings) -> None:
    # a parent that is not a cgroup at all: nothing can be made there
    bad = settings.model_copy(
        update={"cgroups": "required", "cgroups_parent": "/no-such-cgroup/x/y"}
    )
    with pytest.raises(ProviderError, match="CERVER_CGROUPS=required"):
        cgroups.require(bad)


def test_limits_a_tenant_may_lower_never_raise(settings: Settings) -> None:
    from cerver.adapters.local.isolation import limits_from

    base = limits_from(settings)
    assert (base.total_memory_mb, base.pids_max, base.cpus) == (2048, 256, 1.0)
    lower = limits_from(settings, memory_mb=300, cpus=0.5)
    assert (lower.total_memory_mb, lower.memory_mb, lower.cpus) == (300, 300, 0.5)
    higher = limits_from(settings, memory_mb=999_999, cpus=64)
    assert (higher.total_memory_mb, higher.cpus) == (2048, 1.0)
    assert cgroups.limits_of(lower) == CgroupLimits(300 * 1024 * 1024, 256, 50_000)


def test_sweep_removes_cgroups_of_sandboxes_that_are_gone(settings: Settings) -> None:
    backend = _v1(settings) or _v2(settings)
    if backend is None:
        pytest.skip("no writable cgroups here")
    (settings.sandboxes_dir / "sbx_kept").mkdir(parents=True)
    kept = backend.create("sbx_kept", LIMITS)
    gone = backend.create("sbx_gone", LIMITS)
    try:
        assert cgroups.sweep(backend, settings) >= 1  # (and leftovers of other servers)
        assert kept.dirs[0].is_dir() and not gone.dirs[0].exists()
    finally:
        kept.remove()
        gone.remove()
        backend.remove_parents()


# --------------------------------------------------------------------------- the adapter


async def test_a_sandbox_runs_in_its_cgroup_which_goes_with_it(
    adapter: LocalAdapter, new_sandbox: Callable[..., Any], settings: Settings
) -> None:
    backend, _ = cgroups.probe(settings)
    if backend is None:
        pytest.skip("no writable cgroups here")
    record = await new_sandbox(resources={"memory_mb": 300, "cpu": 0.5})
    out = await adapter.run(record, ExecRequest(code="echo $$"))
    assert out.exit_code == 0
    cg = adapter._cgroups.get(record.sandbox_id)
    assert cg is not None
    members = cg.pids()
    sup = adapter._live[record.sandbox_id].supervisor
    assert sup is not None and sup.pid in members  # bwrap / the supervisor, from its exec
    if "memory" in backend.enforced:  # what the tenant asked for: less than the cap
        name = "memory.max" if backend.name == "v2" else "memory.limit_in_bytes"
        assert cg.read(name).strip() == str(300 * 1024 * 1024)
    if "cpu" in backend.enforced:
        name = "cpu.max" if backend.name == "v2" else "cpu.cfs_quota_us"
        assert cg.read(name).split()[0] == "50000"
    await adapter.suspend(record)  # hibernated sandboxes hold no cgroup
    assert not any(d.exists() for d in cg.dirs)
    assert (await adapter.run(record, ExecRequest(code="echo back"))).stdout == "back\n"
    cg = adapter._cgroups.get(record.sandbox_id)
    assert cg is not None and cg.pids()
    await adapter.delete_sandbox(record)
    assert not any(d.exists() for d in cg.dirs)


async def test_the_cgroup_is_made_with_the_sandbox_not_its_first_run(
    adapter: LocalAdapter, new_sandbox: Callable[..., Any], settings: Settings
) -> None:
    """Made (and limited) when the sandbox is provisioned, in the worker thread that makes
    its workspace: the first run only joins it."""
    backend, _ = cgroups.probe(settings)
    if backend is None:
        pytest.skip("no writable cgroups here")
    record = await new_sandbox(resources={"cpu": 0.25})
    assert record.sandbox_id not in adapter._live  # no process started yet
    cg = adapter._cgroups.get(record.sandbox_id)
    assert cg is not None and all(d.is_dir() for d in cg.dirs) and cg.pids() == []
    if "cpu" in backend.enforced:
        name = "cpu.max" if backend.name == "v2" else "cpu.cfs_quota_us"
        assert cg.read(name).split()[0] == "25000"
    assert (await adapter.run(record, ExecRequest(code="true"))).exit_code == 0
    assert adapter._cgroups.get(record.sandbox_id) is cg and cg.pids()


def _ours(backend: cgroups.Backend) -> list[Path]:
    """Every cgroup directory this adapter's key has on the node (all controllers)."""
    return [d for parent in backend.parents() if parent.is_dir() for d in parent.iterdir()
            if d.is_dir()]  # fmt: skip


async def test_no_cgroup_is_left_on_any_exit_path(settings: Settings) -> None:
    """Deleted unused, deleted after runs, suspended and woken, taken from the pool,
    left in the pool, handed out at close: after close, nothing of ours is left."""
    backend, _ = cgroups.probe(settings)
    if backend is None:
        pytest.skip("no writable cgroups here")
    spec = SandboxSpec(account_id="acct_test")
    adapter = LocalAdapter(settings)
    try:
        unused = await adapter.create_sandbox(spec)
        await adapter.delete_sandbox(unused)
        ran = await adapter.create_sandbox(spec)
        await adapter.run(ran, ExecRequest(code="sleep 60 & echo bg"))  # a process left over
        await adapter.delete_sandbox(ran)
        woken = await adapter.create_sandbox(spec)
        await adapter.run(woken, ExecRequest(code="true"))
        await adapter.suspend(woken)
        assert [d.name for d in _ours(backend)] == []  # a suspended sandbox holds none
        await adapter.run(woken, ExecRequest(code="true"))
        await adapter.delete_sandbox(woken)
        assert _ours(backend) == []
        await adapter.warm(2)
        for _ in range(500):
            if adapter.pool_size() >= 2:
                break
            await asyncio.sleep(0.02)
        assert adapter.pool_size() >= 2  # (recent demand may size it up to 3)
        made = {d.name for d in _ours(backend)}
        assert {ready.sandbox_id for ready in adapter._pool._ready} <= made  # made ahead
        taken = await adapter.create_sandbox(spec)
        await adapter.run(taken, ExecRequest(code="sleep 60 & echo bg"))
        kept = await adapter.create_sandbox(spec)  # handed out and never deleted
        await adapter.run(kept, ExecRequest(code="true"))
        await adapter.delete_sandbox(taken)
    finally:
        await adapter.close()
    assert _ours(backend) == []
    assert not any(p.exists() for p in backend.parents())


@pytest.mark.parametrize("isolation", ["rlimits"])
async def test_the_last_escalation_kills_what_left_the_group(
    adapter: LocalAdapter, sandbox: SandboxRecord, settings: Settings
) -> None:
    """A process that left its run's group (setsid) survives the supervisor's death in
    rlimits mode (no pid namespace); the sandbox's cgroup kill takes it too."""
    if cgroups.probe(settings)[0] is None:
        pytest.skip("no writable cgroups here")
    code = (  # once it has its own session (field 6 of stat), the run's group kill misses it
        "setsid sleep 300 > /dev/null 2>&1 < /dev/null & p=$!; "
        "until [ \"$(cut -d' ' -f6 /proc/$p/stat)\" = $p ]; do sleep 0.01; done; echo $p"
    )
    out = await adapter.run(sandbox, ExecRequest(code=code))
    pid = int(out.stdout)
    assert Path(f"/proc/{pid}").exists()
    sup = adapter._live[sandbox.sandbox_id].supervisor
    assert sup is not None
    await sup.stop("a test escalates")
    wait_for(lambda: not Path(f"/proc/{pid}").exists() or _zombie(pid))


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat[stat.rfind(")") + 2] == "Z"


async def test_required_refuses_sandboxes_and_leaves_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    settings = make_settings(
        home, "bwrap", cgroups="required", cgroups_parent="/no-such-cgroup/x/y"
    )
    adapter = LocalAdapter(settings)
    try:
        with pytest.raises(ProviderError, match="CERVER_CGROUPS=required"):
            await adapter.create_sandbox(SandboxSpec(account_id="acct_test"))
        assert not settings.sandboxes_dir.exists() or not any(settings.sandboxes_dir.iterdir())
    finally:
        await adapter.close()


# --------------------------------------------------------------------------- settings


def test_the_settings_are_read_and_checked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from cerver.config import ConfigError

    monkeypatch.setenv("CERVER_HOME", str(tmp_path / "cfg"))
    values = {
        "CERVER_CGROUPS": "required", "CERVER_CGROUPS_PARENT": "/delegated/cerver",
        "CERVER_SANDBOX_TOTAL_MEMORY_MB": "512", "CERVER_SANDBOX_PIDS_MAX": "64",
        "CERVER_SANDBOX_CPUS": "0.5", "CERVER_SANDBOX_DISK_MB": "0",
        "CERVER_SANDBOX_DISK_FILES": "5000",
    }  # fmt: skip
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    s = Settings.from_env()
    assert (s.cgroups, s.cgroups_parent) == ("required", "/delegated/cerver")
    assert (s.sandbox_total_memory_mb, s.sandbox_pids_max, s.sandbox_cpus) == (512, 64, 0.5)
    assert (s.sandbox_disk_mb, s.sandbox_disk_files) == (0, 5000)
    monkeypatch.setenv("CERVER_CGROUPS", "sometimes")
    with pytest.raises(ConfigError, match="CERVER_CGROUPS"):
        Settings.from_env()


def _ours_and_another_servers(
    settings: Settings, tmp_path: Path
) -> tuple[cgroups.Backend, cgroups.Backend]:
    """This node's backend for ``settings``, and another server's on the same node."""
    backend = _v1(settings) or _v2(settings)
    if backend is None:
        pytest.skip("no writable cgroups here")
    other_home = tmp_path / "other"
    other_home.mkdir()
    other = cgroups.probe(make_settings(other_home, "bwrap"))[0]
    assert other is not None
    return backend, other


def test_sweep_removes_empty_leftovers_of_other_servers_only(
    settings: Settings, tmp_path: Path
) -> None:
    backend, other = _ours_and_another_servers(settings, tmp_path)
    empty = other.create("sbx_leftover", LIMITS)
    busy = other.create("sbx_busy", LIMITS)
    proc = spawn_in(busy, FORKER)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        # (other servers on this node may leave stale cgroups that this sweep removes: the
        # count is theirs; what matters is that ours, made just now, maybe in use, stays)
        cgroups.sweep(backend, settings)
        assert empty.dirs[0].is_dir()
        assert cgroups.sweep(backend, settings, stale_s=0) >= 1
        assert not any(d.exists() for d in empty.dirs)
        assert all(d.is_dir() for d in busy.dirs)  # processes in it: never another's
    finally:
        busy.remove()
        empty.remove()
        other.remove_parents()
        backend.remove_parents()
    assert not any(p.exists() for p in other.parents())


def test_sweep_walks_past_a_parent_that_goes_while_it_looks(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another server's parent vanishes between listing it and walking it (that server
    shut down, or its own sweep emptied it): in CI this raised FileNotFoundError out of a
    sandbox start. The race, made deterministic: the parent goes right after the listing."""
    backend, other = _ours_and_another_servers(settings, tmp_path)
    other.create("sbx_gone", LIMITS).remove()  # made its parents, now empty
    real = cgroups._subdirs
    listed: list[Path] = []

    def then_the_other_server_goes(path: Path, prefix: str) -> list[Path]:
        found = real(path, prefix)
        if prefix == cgroups.PARENT_PREFIX:
            listed.extend(found)
            other.remove_parents()
        return found

    monkeypatch.setattr(cgroups, "_subdirs", then_the_other_server_goes)
    try:
        cgroups.sweep(backend, settings)
        assert set(listed) & set(other.parents())  # it was listed, then went
        assert not any(p.exists() for p in other.parents())
    finally:
        other.remove_parents()
        backend.remove_parents()
