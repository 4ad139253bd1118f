"""A warm pool of ready local sandboxes: workspace made, supervisor and interpreter running.

``WarmPool`` only keeps count and refills; what "provision" and "discard" mean is the
adapter's. Refilling runs in one background task on the event loop and never blocks a
taker: an empty pool answers ``None`` and the caller provisions the slow way. A failed
provision is logged and retried with a backoff (the pool then just stays short).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from cerver.adapters.local.layout import LocalSandboxData
from cerver.errors import CerverError

log = logging.getLogger(__name__)

RETRY_BACKOFF_S = (0.1, 0.5, 2.0, 5.0)
# Refilling starts this long after the last take: provisioning forks this process on the
# event loop, which would otherwise land on the first command of the sandbox just taken.
REFILL_DELAY_S = 0.05


@dataclass(frozen=True)
class Ready:
    """A provisioned sandbox nobody holds yet."""

    sandbox_id: str
    data: LocalSandboxData


class WarmPool:
    def __init__(
        self,
        provision: Callable[[], Awaitable[Ready]],
        discard: Callable[[Ready], Awaitable[None]],
    ) -> None:
        self._provision = provision
        self._discard = discard
        self._ready: deque[Ready] = deque()
        self._target = 0
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._closing = asyncio.Event()
        self._last_take = 0.0

    def __len__(self) -> int:
        return len(self._ready)

    @property
    def target(self) -> int:
        return self._target

    def resize(self, count: int) -> None:
        """Keep ``count`` sandboxes ready from now on (needs a running event loop)."""
        if count < 0:
            raise ValueError("the pool size must be >= 0")
        if self._closed:
            raise RuntimeError("the pool is closed")
        self._target = count
        self._kick()

    def take(self, fits: Callable[[Ready], bool]) -> Ready | None:
        """A ready sandbox that ``fits``, or None (never waits); refills in the background."""
        for ready in self._ready:
            if fits(ready):
                self._ready.remove(ready)
                self._last_take = asyncio.get_running_loop().time()
                self._kick()
                return ready
        return None

    def _kick(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._refill())

    async def _refill(self) -> None:
        failures = 0
        while not self._closed:
            while len(self._ready) > self._target:
                await self._discard(self._ready.pop())
            if len(self._ready) == self._target:
                return
            quiet = self._last_take + REFILL_DELAY_S - asyncio.get_running_loop().time()
            if quiet > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), quiet)
                continue
            try:
                ready = await self._provision()
            except (CerverError, OSError) as exc:
                delay = RETRY_BACKOFF_S[min(failures, len(RETRY_BACKOFF_S) - 1)]
                failures += 1
                log.warning(
                    "warm pool: provisioning a sandbox failed (%s); retry in %ss", exc, delay
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), delay)
                continue
            failures = 0
            if self._closed:
                await self._discard(ready)
                return
            self._ready.append(ready)

    async def close(self) -> None:
        """Stop refilling (a provision in flight completes, then is discarded) and discard
        every ready sandbox."""
        self._closed = True
        self._closing.set()
        task, self._task = self._task, None
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)
        while self._ready:
            await self._discard(self._ready.pop())
