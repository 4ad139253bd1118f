"""A warm pool of ready local sandboxes: workspace made, supervisor and interpreter running.

``WarmPool`` only keeps count and refills; what "provision" and "discard" mean is the
adapter's. Refilling runs in one background task on the event loop and never blocks a
taker: an empty pool answers ``None`` and the caller provisions the slow way. A failed
provision is logged and retried with a backoff (the pool then just stays short).

Sized from recent demand: the pool keeps its configured size, or as many sandboxes as were
asked for in the last ``DEMAND_WINDOW_S`` when that is more, up to ``max_size``; when the
demand passes, the surplus is discarded. A pool of size 0 stays empty (no demand sizing).
Refills run ``REFILL_PARALLEL`` provisions at once: a sandbox's start is mostly waiting on
the kernel (namespaces, exec), not CPU.
"""

from __future__ import annotations

import asyncio
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
# Growing beyond the configured size waits for a longer lull: a burst's own first commands
# come after its creates, and must not share the CPUs with the pool's growth.
GROW_DELAY_S = 1.0
DEMAND_WINDOW_S = 60.0
REFILL_PARALLEL = 2


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
        *,
        max_size: int = 0,
    ) -> None:
        self._provision = provision
        self._discard = discard
        self._ready: deque[Ready] = deque()
        self._base = 0
        self._max = max_size
        self._asked: deque[float] = deque()  # when a sandbox was asked for (recent demand)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._closing = asyncio.Event()
        self._last_take = 0.0
        self._last_cold = 0.0  # issue 16 (burst): the last sandbox started outside the pool

    def cold_start(self) -> None:
        """A sandbox started its processes outside the pool (a miss's first run): a burst
        is still starting sandboxes, so growth beyond the configured size waits for
        ``GROW_DELAY_S`` after the last such start, not only after the last take (a
        burst's first commands come after its creates, and start the same processes)."""
        self._last_cold = asyncio.get_running_loop().time()

    def __len__(self) -> int:
        return len(self._ready)

    @property
    def target(self) -> int:
        """The configured size, raised to the recent demand (up to ``max_size``)."""
        demand = self._demand()
        return max(self._base, min(self._max, demand)) if self._base else 0

    def _demand(self) -> int:
        horizon = asyncio.get_running_loop().time() - DEMAND_WINDOW_S
        while self._asked and self._asked[0] < horizon:
            self._asked.popleft()
        return len(self._asked)

    def resize(self, count: int) -> None:
        """Keep ``count`` sandboxes ready from now on (needs a running event loop)."""
        if count < 0:
            raise ValueError("the pool size must be >= 0")
        if self._closed:
            raise RuntimeError("the pool is closed")
        self._base = count
        self._kick()

    def take(self, fits: Callable[[Ready], bool]) -> Ready | None:
        """A ready sandbox that ``fits``, or None (never waits); refills in the background.
        Every call counts as demand, hit or miss."""
        self._demand()  # forget what is older than the window
        now = asyncio.get_running_loop().time()
        self._asked.append(now)
        self._last_take = now
        found = next((ready for ready in self._ready if fits(ready)), None)
        if found is not None:
            self._ready.remove(found)
        self._kick()
        return found

    def _kick(self) -> None:
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._refill())

    async def _pause(self, seconds: float | None, *, wakes: bool = False) -> None:
        """Sleep ``seconds`` (None: until woken), cut short by close (or a take: ``wakes``)."""
        waits = [asyncio.ensure_future(self._closing.wait())]
        if wakes:
            waits.append(asyncio.ensure_future(self._wake.wait()))
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()

    async def _refill(self) -> None:
        failures = 0
        loop = asyncio.get_running_loop()
        while not self._closed:
            self._wake.clear()
            target = self.target
            while len(self._ready) > target:
                await self._discard(self._ready.pop())
            if len(self._ready) == target:
                if target <= self._base:
                    return
                # Above the configured size: shrink once the demand that raised it passes.
                passes = self._asked[0] + DEMAND_WINDOW_S - loop.time()
                await self._pause(max(passes, 0.0), wakes=True)
                continue
            delay = REFILL_DELAY_S if len(self._ready) < self._base else GROW_DELAY_S
            quiet = self._last_take + delay - loop.time()
            if delay == GROW_DELAY_S:
                quiet = max(quiet, self._last_cold + GROW_DELAY_S - loop.time())
            if quiet > 0:
                await self._pause(quiet)
                continue
            batch = min(target - len(self._ready), REFILL_PARALLEL)
            made = await asyncio.gather(
                *(self._provision() for _ in range(batch)), return_exceptions=True
            )
            fatal: BaseException | None = None
            failed: BaseException | None = None
            for result in made:
                if isinstance(result, Ready):
                    if self._closed:
                        await self._discard(result)
                    else:
                        self._ready.append(result)
                elif isinstance(result, CerverError | OSError):
                    failed = result
                else:
                    fatal = fatal or result
            if fatal is not None:
                raise fatal
            if failed is not None:
                delay = RETRY_BACKOFF_S[min(failures, len(RETRY_BACKOFF_S) - 1)]
                failures += 1
                log.warning(
                    "warm pool: provisioning a sandbox failed (%s); retry in %ss", failed, delay
                )
                await self._pause(delay)
                continue
            failures = 0

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
