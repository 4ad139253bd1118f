"""Resource probes against the real server (Ray Serve, real HTTP, bwrap, real cgroups).

Each probe exhausts one resource from inside a sandbox and asserts the exact outcome:
which bound stopped it (read from the sandbox's cgroup on the host, where the kernel
counts it), what the run answered, that the server still answers and the sandbox's
next run works. The shared test server's bounds (tests/conftest.py): 100 tasks, 1 GiB
of memory, a 256 MiB / 12,000-file workspace budget.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from cerver.adapters.local import cgroups, disk
from cerver.config import Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@pytest.fixture
def box(api: httpx.Client) -> Iterator[str]:
    r = api.post("/sandbox", json={"runtime": "python"})
    assert r.status_code == 200, r.text
    sid = str(r.json()["sandbox_id"])
    yield sid
    api.delete(f"/sandbox/{sid}")


@pytest.fixture
def box_cgroup(api: httpx.Client, box: str, store: Any, server_settings: Settings) -> Any:
    """The sandbox's cgroup, read on the host (its supervisor started: the cgroup exists)."""
    run(api, box, "true")
    return cgroup_of(store, server_settings, box)


def run(api: httpx.Client, sid: str, code: str, **kw: Any) -> dict:
    body = {"code": code, "language": "shell", **kw}
    r = api.post(f"/sandbox/{sid}/run", json=body, timeout=150)
    assert r.status_code == 200, r.text
    return dict(r.json())


def local_id(store: Any, compute_id: str) -> str:
    row = store.computes.get(compute_id)
    assert row is not None and row.record is not None
    return str(row.record["sandbox_id"])


def cgroup_of(store: Any, settings: Settings, compute_id: str) -> cgroups.Cgroup:
    backend, note = cgroups.probe(settings)
    if backend is None:
        pytest.skip(f"no cgroups on this machine: {note}")
    cgroup = backend.existing(local_id(store, compute_id))
    assert cgroup is not None, "the sandbox has no cgroup"
    return cgroup


def counters(text: str) -> dict[str, int]:
    return {k: int(v) for k, v in (line.split() for line in text.splitlines())}


def still_answering(api: httpx.Client, sid: str) -> None:
    assert api.get("/healthz").status_code == 200
    assert run(api, sid, "echo after")["output"] == "after"


FORKER = """python3 -c '
import os, time
n = 0
try:
    while n < 1000:
        if os.fork() == 0:
            time.sleep(20)
            os._exit(0)
        n += 1
except BlockingIOError as exc:
    print(n, exc.errno)
'"""


def test_forks_stop_at_pids_max(api: httpx.Client, box: str, box_cgroup: Any) -> None:
    cgroup = box_cgroup
    assert cgroup.read("pids.max").strip() == "100"
    before = counters(cgroup.read("pids.events"))["max"]
    out = run(api, box, FORKER, timeout=30)
    forked, errno = map(int, out["output"].split())
    # refused with EAGAIN before 100 tasks (bwrap's init, the supervisor, bash and python
    # hold some of them), by the cgroup: it counts the refusal; RLIMIT_NPROC is 128
    assert errno == 11 and 80 < forked < 100, out
    assert counters(cgroup.read("pids.events"))["max"] > before
    # the run's group (the sleepers) was emptied before its exit was reported
    assert len(cgroup.pids()) < 10
    still_answering(api, box)


def test_a_bash_fork_bomb_is_held_by_the_cgroup(
    api: httpx.Client, box: str, box_cgroup: Any
) -> None:
    cgroup = box_cgroup
    before = counters(cgroup.read("pids.events"))["max"]
    # the bomb in the background; the shell then spins ~1 s on builtins only (a fork
    # would wait for a free task) and reports; the run's group is emptied after
    code = ":(){ :|:& };: 2>/dev/null; for ((i = 0; i < 300000; i++)); do true; done; echo held"
    out = run(api, box, code, timeout=20)
    assert out["output"] == "held" and out["exit_code"] == 0 and out["timed_out"] is False
    assert counters(cgroup.read("pids.events"))["max"] > before  # it hit pids.max
    assert len(cgroup.pids()) < 10
    still_answering(api, box)


def test_memory_past_the_sandbox_total_is_oom_killed_inside(
    api: httpx.Client, box: str, box_cgroup: Any
) -> None:
    cgroup = box_cgroup
    v2 = "memory.max" in {p.name for p in cgroup.dirs[0].iterdir()}
    limit = cgroup.read("memory.max" if v2 else "memory.limit_in_bytes").strip()
    assert limit == str(1024 * 1024 * 1024)
    # each under RLIMIT_AS (1 GiB per process); together past the sandbox's 1 GiB
    small = 'import time; b = b"x" * (300 << 20); time.sleep(4); print("small kept")'
    big = 'b = b"x" * (900 << 20); print("big kept")'
    code = f"python3 -c '{small}' & sleep 1; python3 -c '{big}'; echo big=$?; wait"
    out = run(api, box, code, timeout=60)
    assert out["output"].split("\n") == ["big=137", "small kept"], out  # 137: SIGKILL
    events = cgroup.read("memory.events" if v2 else "memory.oom_control")
    assert counters(events)["oom_kill"] >= 1
    still_answering(api, box)


def test_30_gb_allocation_is_refused_inside(api: httpx.Client, box: str) -> None:
    out = run(api, box, "python3 -c 'b = bytearray(30 * 1024**3)'")
    assert out["exit_code"] == 1 and "MemoryError" in out["error"]  # RLIMIT_AS, the floor
    still_answering(api, box)


def test_filling_the_disk_stops_at_the_workspace_budget(
    api: httpx.Client, box: str, store: Any, server_settings: Settings
) -> None:
    code = "for i in $(seq 12); do head -c 100000000 /dev/zero > f$i || break; done; echo done"
    out = run(api, box, code, timeout=60)
    assert out["exit_code"] == 137 and "done" not in out["output"], out  # SIGKILL
    assert "the workspace passed its disk budget of 256 MiB" in out["error"]
    workspace = server_settings.sandboxes_dir / local_id(store, box)
    used = disk.measure(str(workspace)).bytes
    # stopped within one measurement of the budget: 1.2 GB were asked for
    assert 256 << 20 < used < 600 << 20, used
    r = api.put(f"/sandbox/{box}/files", params={"path": "more"}, content=b"x" * 1024)
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    assert r.json()["error"]["details"]["setting"] == "CERVER_SANDBOX_DISK_MB"
    assert run(api, box, "rm f*; echo cleaned")["output"] == "cleaned"
    r = api.put(f"/sandbox/{box}/files", params={"path": "more"}, content=b"x" * 1024)
    assert r.status_code in (200, 204), r.text
    still_answering(api, box)


def test_10000_files_fit_and_more_than_the_budget_do_not(api: httpx.Client, box: str) -> None:
    code = "mkdir many && cd many && for i in $(seq 10000); do : > f$i; done; ls | wc -l"
    assert run(api, box, code, timeout=90)["output"] == "10000"
    # paced (a pause every 1,000 files) so the run outlasts the watch's measurements,
    # which a workspace of 10,000+ files spaces by 10x a walk's time
    code = "mkdir more && cd more && for i in $(seq 10000); do : > f$i; "
    code += "(( i % 1000 )) || sleep 0.3; done; echo done"
    out = run(api, box, code, timeout=90)
    assert out["exit_code"] == 137 and "done" not in out["output"], out  # SIGKILL
    assert "the workspace passed its budget of 12000 files" in out["error"]
    assert run(api, box, "rm -r more; ls many | wc -l")["output"] == "10000"
    still_answering(api, box)
