"""Reaping and killing sandbox processes: process groups, dedicated uids, orphans.

This process is made a child subreaper, so killed grandchildren of sandboxes are
reparented to us instead of to init (which, in a container, may never reap them), and we
reap them here: only zombies of our sandboxes (a pgid we created, or a uid other than
ours), never other children of this process (asyncio waits for those: ``direct_children``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

from cerver.adapters.local.isolation import enable_subreaper

KILL_WAIT_S = 3.0
REAP_BACKOFF_S = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)

direct_children: set[int] = set()  # awaited by asyncio: never reap these ourselves
_our_pgids: set[int] = set()
_subreaper = False
_reapers: dict[asyncio.AbstractEventLoop, asyncio.Task[None]] = {}


def ensure_subreaper() -> None:
    global _subreaper
    if not _subreaper:
        enable_subreaper()
        _subreaper = True


def adopt_child(pid: int) -> None:
    """A process we spawned (asyncio reaps it) that leads its own group (ours to reap)."""
    direct_children.add(pid)
    _our_pgids.add(pid)


def _proc_stat(pid: str) -> tuple[str, int, int, int] | None:
    """(state, ppid, pgrp, start time in clock ticks) of a process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2 :].split()
    return fields[0].decode(), int(fields[1]), int(fields[2]), int(fields[19])


def _our_children() -> list[str] | None:
    """Pids of this process's children, from each thread's ``children`` list (orphans
    reparented to us count: we are their subreaper); None where the kernel has no such
    list (``CONFIG_PROC_CHILDREN``). Reading these is O(our children), where a scan of
    /proc is O(every process on the node), and runs on the event loop."""
    global _children_listed
    if _children_listed is None:
        _children_listed = os.path.exists(f"/proc/self/task/{os.getpid()}/children")
    if not _children_listed:
        return None
    pids: list[str] = []
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/children", "rb") as fh:
                pids.extend(pid.decode() for pid in fh.read().split())
        except FileNotFoundError:  # the thread just exited
            continue
    return pids


_children_listed: bool | None = None


def reap_orphans() -> int:
    """Reap zombie children of ours that came from sandboxes; return how many such
    orphans are still alive (dying: reap again later)."""
    me, my_uid, alive = os.getpid(), os.geteuid(), 0
    listed = _our_children()
    candidates = listed if listed is not None else os.listdir("/proc")
    for name in candidates:
        if not name.isdigit() or int(name) in direct_children:
            continue
        stat = _proc_stat(name)
        if stat is None or stat[1] != me:
            continue
        try:
            foreign = os.stat(f"/proc/{name}").st_uid != my_uid
        except FileNotFoundError:
            continue
        if not (foreign or stat[2] in _our_pgids):
            continue
        if stat[0] != "Z":
            alive += 1
            continue
        with contextlib.suppress(ChildProcessError):
            os.waitpid(int(name), os.WNOHANG)
    return alive


def schedule_reap() -> None:
    """Reap sandbox orphans in the background until none is left (e.g. bwrap's pid-1 init,
    which outlives the bwrap we spawned while its namespace is torn down)."""
    loop = asyncio.get_running_loop()
    task = _reapers.get(loop)
    if task is None or task.done():
        _reapers[loop] = loop.create_task(_reap_until_clean())
        for other in [k for k, t in _reapers.items() if t.done()]:
            del _reapers[other]


async def _reap_until_clean() -> None:
    step = 0
    while True:
        await asyncio.sleep(REAP_BACKOFF_S[min(step, len(REAP_BACKOFF_S) - 1)])
        if reap_orphans() == 0 and step >= 2:
            return
        step += 1


def adopt_pgid(pgid: int) -> None:
    """A process group started on our behalf (by a sandbox supervisor, rlimits mode): its
    orphans are reparented to us and ours to reap."""
    _our_pgids.add(pgid)


def child_group_of(pid: int, parent: int) -> tuple[int, int] | None:
    """``(pid, start time)`` when ``pid`` (a sandbox's word) is a process-group leader
    whose parent is ``parent`` (the supervisor we spawned), else None: a forged pid
    names some other process, and we never signal it."""
    if pid <= 1:
        return None
    stat = _proc_stat(str(pid))
    if stat is None or stat[1] != parent or stat[2] != pid:
        return None
    return pid, stat[3]


def signal_verified_group(pgid: int, start: int) -> None:
    """SIGKILL a group checked by ``child_group_of``, if its leader is still that process
    (same start time: the pid was not reused)."""
    stat = _proc_stat(str(pgid))
    if stat is not None and stat[2] == pgid and stat[3] == start:
        signal_group(pgid)


def signal_group(pgid: int, sig: int = signal.SIGKILL) -> bool:
    """Signal a process group; False when it has no member left."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        _our_pgids.discard(pgid)
        return False
    except PermissionError:
        return True
    return True


async def kill_group(pgid: int, *, timeout_s: float = KILL_WAIT_S) -> bool:
    """SIGKILL a process group until it is empty (fork bombs re-spawn); True when it is."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while signal_group(pgid):
        reap_orphans()
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.01)
    reap_orphans()
    return True


def kill_uid(uid: int) -> int:
    """SIGKILL every process running as ``uid`` (a dedicated sandbox uid); return the count."""
    killed = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
            os.kill(int(entry.name), signal.SIGKILL)
            killed += 1
        except (FileNotFoundError, ProcessLookupError):
            continue
    return killed
