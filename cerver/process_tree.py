"""The processes below this one, for a shutdown that leaves nothing behind (Linux).

``cerver serve`` that started its own Ray owns every process below it: Ray's, the session
hosts', and the sandboxes' (which may be stopped, hung, or in their own process groups and
namespaces). At shutdown it becomes a *child subreaper*, so what outlives its parent is
re-parented here instead of to init, and after Ray is shut down it SIGKILLs whatever is
still below it and reaps it. SIGKILL also ends a stopped (``SIGSTOP``) process.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import time

PR_SET_CHILD_SUBREAPER = 36


def adopt_orphans() -> bool:
    """Re-parent orphaned descendants to this process from now on; False if unsupported."""
    try:
        return bool(
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
        )
    except (OSError, AttributeError):
        return False


def _parents() -> dict[int, int]:
    found: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                found[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return found


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for child, parent in _parents().items():
        children.setdefault(parent, []).append(child)
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def reap_children() -> None:
    """Reap every child of this process that has exited (re-parented orphans included)."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass


def kill_descendants(timeout_s: float) -> set[int]:
    """SIGKILL every process below this one until none is left (or ``timeout_s`` passed),
    reaping the ones re-parented here; the pids still alive at the end."""
    deadline = time.monotonic() + timeout_s
    me = os.getpid()
    while True:
        left = living_descendants(me)
        if not left or time.monotonic() > deadline:
            reap_children()
            return left
        for pid in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
        reap_children()


def living_descendants(pid: int) -> set[int]:
    """The processes below ``pid`` that have not exited (zombies left out)."""
    return {p for p in descendants(pid) if not _zombie(p)}


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
