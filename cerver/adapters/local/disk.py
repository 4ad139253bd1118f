"""A disk budget per workspace: bytes and files, measured and enforced by the host.

``RLIMIT_FSIZE`` bounds one file; this bounds the workspace (``CERVER_SANDBOX_DISK_MB``,
``CERVER_SANDBOX_DISK_FILES``), so many files cannot fill the disk that holds the store.
The host measures the workspace itself (the sandbox's word is never asked): before a
files-API write (refused past the budget, 413), and while a run or install is in flight
and after it (``SandboxDisk``, one per sandbox: past the budget, everything of the sandbox
is killed and the run says why).
A workspace already over its budget may shrink (its runs go on, so ``rm`` works), never
grow. Why not a loop-mounted image or a tmpfs per workspace, and what an operator adds
for a kernel-enforced bound: docs/security.md ("Disk budget").
"""

from __future__ import annotations

import asyncio
import math
import os
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from cerver.config import Settings
from cerver.errors import PayloadTooLarge

MIB = 1024 * 1024
MIN_POLL_S = 0.1  # between two measurements of a workspace
POLL_COST_RATIO = 10  # wait at least 10x what one measurement took (a walk costs CPU)


@dataclass(frozen=True)
class Usage:
    bytes: int  # allocated on disk (st_blocks), each inode once
    files: int  # entries of any kind, directories included


@dataclass(frozen=True)
class Budget:
    bytes: int
    files: int

    @classmethod
    def of(cls, settings: Settings) -> Budget | None:
        if settings.sandbox_disk_mb <= 0:
            return None
        return cls(settings.sandbox_disk_mb * MIB, settings.sandbox_disk_files)

    def over(self, usage: Usage, allowed: Usage | None = None) -> str | None:
        """Why ``usage`` breaks the budget (``allowed``: a larger start it may not grow
        past), or None."""
        max_bytes = max(self.bytes, allowed.bytes if allowed else 0)
        max_files = max(self.files, allowed.files if allowed else 0)
        if usage.bytes > max_bytes:
            return f"the workspace passed its disk budget of {self.bytes // MIB} MiB"
        if usage.files > max_files:
            return f"the workspace passed its budget of {self.files} files"
        return None


def measure(workspace: str, stop_past: Budget | None = None) -> Usage:
    """Walk the workspace without following symlinks; stop early once past ``stop_past``
    twice over (enough to know it is over)."""
    seen: set[tuple[int, int]] = set()
    total = files = 0
    stack = [workspace]
    while stack:
        try:
            entries = os.scandir(stack.pop())
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        with entries:
            for entry in entries:
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                files += 1
                if (st.st_dev, st.st_ino) not in seen:
                    if st.st_nlink > 1:
                        seen.add((st.st_dev, st.st_ino))
                    total += st.st_blocks * 512
                if stat.S_ISDIR(st.st_mode):
                    stack.append(entry.path)
        if stop_past and (total > 2 * stop_past.bytes or files > 2 * stop_past.files):
            break
    return Usage(total, files)


def check_write(settings: Settings, workspace: str, size: int) -> None:
    """Before the files API writes ``size`` bytes: 413 if the budget would be passed."""
    budget = Budget.of(settings)
    if budget is None:
        return
    usage = measure(workspace, budget)
    grown = Usage(usage.bytes + size, usage.files + 1)
    reason = budget.over(grown)
    if reason is not None:
        raise PayloadTooLarge(
            f"{reason} (it holds {usage.bytes // MIB} MiB in {usage.files} files); delete "
            "files in the sandbox, or the operator raises CERVER_SANDBOX_DISK_MB / "
            "CERVER_SANDBOX_DISK_FILES",
            details={
                "limit": "sandbox_disk_mb", "value": settings.sandbox_disk_mb,
                "files_limit": settings.sandbox_disk_files,
                "setting": "CERVER_SANDBOX_DISK_MB",
            },
        )  # fmt: skip


class SandboxDisk:
    """One sandbox's workspace against its budget, while runs are in flight and after them.

    One per sandbox (the adapter holds it), not one per run: a run only registers
    (``watch()``), and the measurements are shared. While any run is in flight the
    workspace is walked every ``MIN_POLL_S`` (or ``POLL_COST_RATIO`` x what the last walk
    took, if more); the first walk comes ``MIN_POLL_S`` into a run (sooner when one asked
    for by an earlier run's end falls due), so a short run has no walk on its path. A
    run's end asks for one more walk (what it wrote), at once if none was made within the
    spacing, else when the spacing allows: back-to-back runs share walks (at most one walk
    is pending or in flight; an end during a walk marks the workspace dirty, and it is
    walked once more after). A walk that finds the budget passed
    while runs are in flight calls ``on_over`` (everything of the sandbox is killed) and
    tells each run why (``Watch.tripped``); one that finds it passed between runs marks
    the sandbox over, and its next run is measured before it starts: it may shrink the
    workspace, never grow it."""

    def __init__(
        self, budget: Budget, workspace: str, on_over: Callable[[str], Awaitable[None]]
    ) -> None:
        self._budget = budget
        self._workspace = workspace
        self._on_over = on_over
        self._runs: set[Watch] = set()
        self._timer: asyncio.TimerHandle | None = None  # the next walk, when one is due
        self._timer_at = math.inf  # its loop time (uvloop's handles have no ``when()``)
        self._walk: asyncio.Task[None] | None = None  # the walk in flight
        self._dirty = False  # written to (maybe) since the last walk began
        self._last_walk = -math.inf  # loop time the last walk began
        self._spacing = MIN_POLL_S
        self._closed = False
        self.over = False  # the last walk found the workspace over its budget
        self.walks = 0  # how many walks were made (a test reads it)

    def watch(self) -> Watch:
        """What one run or install is wrapped in (``async with``)."""
        return Watch(self)

    async def _enter(self, run: Watch) -> None:
        if self.over:  # measured now: this run may shrink the workspace, never grow it
            start = await asyncio.to_thread(measure, self._workspace, self._budget)
            self.walks += 1
            self._note(start)
            run.allowed = start if self._budget.over(start) else None
        self._runs.add(run)
        self._dirty = True
        self._schedule(MIN_POLL_S)

    def _exit(self, run: Watch) -> None:
        self._runs.discard(run)
        if run.tripped is None:  # what it wrote since the last walk: measured after it
            self._dirty = True
            self._schedule(0.0)

    def _schedule(self, delay: float) -> None:
        """A walk ``delay`` from now, or later if the spacing asks; none while one runs (it
        looks at ``_dirty`` and the runs in flight when it ends)."""
        if self._closed or self._walk is not None:
            return
        loop = asyncio.get_running_loop()
        when = max(loop.time() + delay, self._last_walk + self._spacing)
        if self._timer is not None:
            if self._timer_at <= when:
                return
            self._timer.cancel()
        self._timer, self._timer_at = loop.call_at(when, self._start_walk), when

    def _start_walk(self) -> None:
        self._timer, self._timer_at = None, math.inf
        if not self._closed:
            self._walk = asyncio.get_running_loop().create_task(self._walk_once())

    async def _walk_once(self) -> None:
        loop = asyncio.get_running_loop()
        self._dirty = False
        self._last_walk = started = loop.time()
        try:
            usage = await asyncio.to_thread(measure, self._workspace, self._budget)
            self.walks += 1
            self._spacing = max(MIN_POLL_S, POLL_COST_RATIO * (loop.time() - started))
            self._note(usage)
            reasons = [self._budget.over(usage, run.allowed) for run in self._runs]
            reason = next((r for r in reasons if r is not None), None)
            if reason is not None:
                for run in self._runs:
                    run.tripped = run.tripped or reason
                await self._on_over(reason)
        finally:
            self._walk = None
        if self._runs or self._dirty:
            self._schedule(0.0)

    def _note(self, usage: Usage) -> None:
        self.over = self._budget.over(usage) is not None

    def close(self) -> None:
        """Stop measuring (the sandbox is gone); a walk in flight is abandoned."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer, self._timer_at = None, math.inf
        if self._walk is not None:
            self._walk.cancel()
            self._walk = None


class Watch:
    """One run or install in flight in a sandbox (``async with sandbox_disk.watch()``).

    ``tripped``: why the run was stopped (the budget was passed while it ran), or None.
    ``allowed``: the workspace at the run's start when that was already over the budget
    (the run may shrink it, never grow it past that)."""

    def __init__(self, disk: SandboxDisk) -> None:
        self._disk = disk
        self.allowed: Usage | None = None
        self.tripped: str | None = None

    async def __aenter__(self) -> Watch:
        await self._disk._enter(self)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self._disk._exit(self)
