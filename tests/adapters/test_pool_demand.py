"""The warm pool's sizing from recent demand, with provision/discard as plain counters (the
pool's own contract: it only keeps count; tests/adapters/test_local_fastpath.py covers it
with real sandboxes)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable

import pytest

from cerver.adapters.local import pool as pool_module
from cerver.adapters.local.layout import Limits, LocalSandboxData
from cerver.adapters.local.pool import Ready, WarmPool
from cerver.errors import ProviderError

pytestmark = pytest.mark.timeout(30)

LIMITS = Limits(cpu_s=1, memory_mb=64, fsize_mb=1, nproc=8)


class Counting:
    """Provisions numbered sandboxes, tracks how many run at once and which were discarded."""

    def __init__(self, delay_s: float = 0.01) -> None:
        self.ids = itertools.count()
        self.delay_s = delay_s
        self.running = 0
        self.most_at_once = 0
        self.discarded: list[str] = []
        self.fail_next = 0

    async def provision(self) -> Ready:
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            await asyncio.sleep(self.delay_s)
            if self.fail_next:
                self.fail_next -= 1
                raise ProviderError("no room")
            sid = f"sbx_{next(self.ids)}"
            data = LocalSandboxData(
                workspace=f"/nowhere/{sid}", uid=1, gid=1, dedicated_uid=False,
                isolation="bwrap", limits=LIMITS,
            )  # fmt: skip
            return Ready(sid, data)
        finally:
            self.running -= 1

    async def discard(self, ready: Ready) -> None:
        self.discarded.append(ready.sandbox_id)


@pytest.fixture(autouse=True)
def short_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool_module, "DEMAND_WINDOW_S", 0.6)
    monkeypatch.setattr(pool_module, "GROW_DELAY_S", 0.05)
    monkeypatch.setattr(pool_module, "RETRY_BACKOFF_S", (0.01,))


@pytest.fixture
async def counting() -> AsyncIterator[Counting]:
    yield Counting()


async def until(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.005)
    return True


def anything(_ready: Ready) -> bool:
    return True


async def test_grows_to_recent_demand_up_to_its_max_then_shrinks(counting: Counting) -> None:
    pool = WarmPool(counting.provision, counting.discard, max_size=5)
    pool.resize(1)
    assert await until(lambda: len(pool) == 1)
    taken = [pool.take(anything) for _ in range(8)]  # 1 hit, 7 misses: all demand
    assert sum(t is not None for t in taken) == 1
    assert pool.target == 5  # capped at max_size, above the configured 1
    assert await until(lambda: len(pool) == 5)
    assert counting.most_at_once <= pool_module.REFILL_PARALLEL
    # The demand passes: back to the configured size, the surplus discarded.
    assert await until(lambda: len(pool) == 1, timeout=5.0)
    assert len(counting.discarded) == 4 and pool.target == 1
    await pool.close()
    assert len(counting.discarded) == 5


async def test_refills_in_parallel(counting: Counting) -> None:
    counting.delay_s = 0.1
    pool = WarmPool(counting.provision, counting.discard, max_size=4)
    pool.resize(4)
    assert await until(lambda: len(pool) == 4)
    assert counting.most_at_once == pool_module.REFILL_PARALLEL
    await pool.close()


async def test_a_pool_of_size_zero_stays_empty_whatever_the_demand(counting: Counting) -> None:
    pool = WarmPool(counting.provision, counting.discard, max_size=8)
    pool.resize(0)
    for _ in range(10):
        assert pool.take(anything) is None
    await asyncio.sleep(0.1)
    assert len(pool) == 0 and pool.target == 0 and next(counting.ids) == 0
    await pool.close()


async def test_failed_provisions_are_retried_and_keep_what_was_made(counting: Counting) -> None:
    counting.fail_next = 3
    pool = WarmPool(counting.provision, counting.discard, max_size=2)
    pool.resize(2)
    assert await until(lambda: len(pool) == 2)
    assert counting.fail_next == 0
    await pool.close()
    assert len(counting.discarded) == 2


async def test_close_while_growing_discards_everything(counting: Counting) -> None:
    counting.delay_s = 0.05
    pool = WarmPool(counting.provision, counting.discard, max_size=6)
    pool.resize(1)
    for _ in range(6):
        pool.take(anything)
    await asyncio.sleep(0.12)  # some provisions in flight
    await pool.close()
    made = next(counting.ids)
    assert len(pool) == 0 and len(counting.discarded) == made
