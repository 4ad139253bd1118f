"""A disk budget per workspace: bytes and files, measured and enforced by the host.

``RLIMIT_FSIZE`` bounds one file; this bounds the workspace (``CERVER_SANDBOX_DISK_MB``,
``CERVER_SANDBOX_DISK_FILES``), so many files cannot fill the disk that holds the store.
The host measures the workspace itself (the sandbox's word is never asked): before a
files-API write (refused past the budget, 413), and while a run or install is in flight
(a ``Watch``: past the budget, everything of the sandbox is killed and the run says why).
A workspace already over its budget may shrink (its runs go on, so ``rm`` works), never
grow. Why not a loop-mounted image or a tmpfs per workspace, and what an operator adds
for a kernel-enforced bound: docs/security.md ("Disk budget").
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from cerver.config import Settings
from cerver.errors import PayloadTooLarge

MIB = 1024 * 1024
MIN_POLL_S = 0.1  # between two measurements of a workspace in use
_background: set[asyncio.Task[None]] = set()  # measurements after short runs
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


class Watch:
    """Measures a workspace while something runs in it; calls ``on_over`` (once) with the
    reason when the budget is passed. Use as ``async with``.

    ``over``: the sandboxes known to be over their budget (this watch keeps it current).
    Only for those is the workspace measured before the run starts (it may then shrink,
    never grow); any other run is measured first after ``MIN_POLL_S``, so most runs end
    without a walk on their path; every run is measured once more after its answer, in
    the background, and one that passes the budget is stopped at its next measurement."""

    def __init__(
        self, budget: Budget, workspace: str, on_over: Callable[[str], Awaitable[None]],
        *, over: set[str], key: str,
    ) -> None:  # fmt: skip
        self._budget = budget
        self._workspace = workspace
        self._on_over = on_over
        self._over, self._key = over, key
        self._task: asyncio.Task[None] | None = None
        self.tripped: str | None = None

    async def __aenter__(self) -> Watch:
        allowed = None
        wait = MIN_POLL_S
        if self._key in self._over:  # measured now and from the run's start
            start = await asyncio.to_thread(measure, self._workspace, self._budget)
            allowed = start if self._budget.over(start) else None
            wait = 0.0
        self._task = asyncio.create_task(self._watch(allowed, wait))
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.tripped is None:  # what it wrote since the last walk: measured after it,
            task = asyncio.create_task(self._remember())  # off its answer's path
            _background.add(task)
            task.add_done_callback(_background.discard)

    async def _remember(self) -> None:
        usage = await asyncio.to_thread(measure, self._workspace, self._budget)
        self._note(usage)

    def _note(self, usage: Usage) -> None:
        if self._budget.over(usage) is None:
            self._over.discard(self._key)
        else:
            self._over.add(self._key)

    async def _watch(self, allowed: Usage | None, wait: float) -> None:
        while True:
            await asyncio.sleep(wait)
            started = time.perf_counter()
            usage = await asyncio.to_thread(measure, self._workspace, self._budget)
            self._note(usage)
            reason = self._budget.over(usage, allowed)
            if reason is not None:
                self.tripped = reason
                await self._on_over(reason)
                return
            wait = max(MIN_POLL_S, POLL_COST_RATIO * (time.perf_counter() - started))
