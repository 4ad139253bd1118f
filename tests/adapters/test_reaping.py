"""Reaping sandbox orphans (adapters/local/reaping.py) with real processes (no Ray)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from cerver.adapters.local import reaping

pytestmark = pytest.mark.timeout(30)

# Leads its own group, forks a child that outlives it, prints the child's pid, exits: the
# child is reparented to us (a subreaper) and becomes our zombie when it ends.
ORPHANER = """
import os, time
pid = os.fork()
if pid == 0:
    time.sleep(0.3)
    os._exit(0)
print(pid, flush=True)
"""


def _state(pid: int) -> str | None:
    stat = reaping._proc_stat(str(pid))
    return None if stat is None else stat[0]


def _orphan(adopt: bool) -> int:
    proc = subprocess.Popen(
        [sys.executable, "-c", ORPHANER], stdout=subprocess.PIPE, start_new_session=True
    )
    assert proc.stdout is not None
    orphan = int(proc.stdout.readline())
    proc.wait()
    if adopt:
        reaping.adopt_pgid(proc.pid)  # a sandbox's group: its orphans are ours to reap
    deadline = time.monotonic() + 10
    while _state(orphan) != "Z":  # reparented to us, then ended
        assert time.monotonic() < deadline, _state(orphan)
        time.sleep(0.02)
    return orphan


@pytest.fixture(params=["children lists", "/proc scan"])
def listing(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways of finding our children: each thread's list, and the fallback scan."""
    if request.param == "/proc scan":
        monkeypatch.setattr(reaping, "_children_listed", False)
    return str(request.param)


def test_orphans_of_sandbox_groups_are_reaped_others_are_not(listing: str) -> None:
    reaping.ensure_subreaper()
    ours = _orphan(adopt=True)
    other = _orphan(adopt=False)  # same uid, not a sandbox's group: not ours to reap
    try:
        assert reaping.reap_orphans() == 0
        assert _state(ours) is None  # reaped
        assert _state(other) == "Z"  # left for whoever owns it
    finally:
        os.waitpid(other, 0)


def test_the_children_lists_name_our_children() -> None:
    listed = reaping._our_children()
    if listed is None:
        pytest.skip("this kernel lists no children (CONFIG_PROC_CHILDREN)")
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
    try:
        assert str(proc.pid) in (reaping._our_children() or [])
    finally:
        proc.kill()
        proc.wait()
