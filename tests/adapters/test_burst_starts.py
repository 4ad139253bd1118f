"""Sandbox starts during a burst (issue 16, burst): the pool grows only once a burst has
stopped starting sandboxes of its own, and an adapter starts at most ``START_PARALLEL``
supervisors at once (a burst of first commands queues for them; each start's deadline
then times the start, not the queue: a burst of 100 lost first commands to that deadline).
The pool with counters (its own contract), the start bound with real sandboxes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cerver.adapters.base import ExecRequest, SandboxSpec
from cerver.adapters.local import LocalAdapter
from cerver.adapters.local import adapter as adapter_module
from cerver.adapters.local import pool as pool_module
from cerver.adapters.local.host_supervisor import Supervisor
from cerver.adapters.local.pool import WarmPool
from tests.adapters.conftest import make_settings
from tests.adapters.test_pool_demand import Counting, anything, until

pytestmark = pytest.mark.timeout(60)


async def test_growth_waits_for_the_last_cold_start(monkeypatch: pytest.MonkeyPatch) -> None:
    # 1 s between cold starts 0.05 s apart: a loaded CI machine stretching one sleep
    # past the delay would make growth legitimate, and the test flaky.
    monkeypatch.setattr(pool_module, "GROW_DELAY_S", 1.0)
    counting = Counting()
    pool = WarmPool(counting.provision, counting.discard, max_size=4)
    pool.resize(1)
    assert await until(lambda: len(pool) == 1)
    for _ in range(4):
        pool.take(anything)  # a burst's creates: demand 4
    pool.cold_start()  # the burst's first commands start their sandboxes
    assert await until(lambda: len(pool) >= 1)  # the configured size comes back at once
    await asyncio.sleep(0.05)
    refilled = len(pool)  # (one refill batch: REFILL_PARALLEL at most)
    assert refilled <= pool_module.REFILL_PARALLEL
    loop = asyncio.get_running_loop()
    until_s = loop.time() + 0.9
    while loop.time() < until_s:  # ... and keep doing so
        pool.cold_start()
        await asyncio.sleep(0.05)
        assert len(pool) == refilled  # no growth while they do
    assert await until(lambda: len(pool) == 4, timeout=5.0)  # then, to the demand
    await pool.close()


async def test_growth_without_cold_starts_is_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool_module, "GROW_DELAY_S", 0.05)
    counting = Counting()
    pool = WarmPool(counting.provision, counting.discard, max_size=3)
    pool.resize(1)
    assert await until(lambda: len(pool) == 1)
    for _ in range(3):
        pool.take(anything)
    assert await until(lambda: len(pool) == 3, timeout=3.0)
    await pool.close()


@pytest.fixture
async def adapter(tmp_path: Path) -> AsyncIterator[LocalAdapter]:
    home = tmp_path / "home"
    home.mkdir()
    instance = LocalAdapter(make_settings(home, "auto", sandbox_pool_size=0))
    yield instance
    await instance.close()


async def test_supervisor_starts_are_bounded_and_all_succeed(
    adapter: LocalAdapter, monkeypatch: pytest.MonkeyPatch
) -> None:
    bound = 2
    monkeypatch.setattr(adapter, "_starts", asyncio.Semaphore(bound))
    starting, most = 0, 0
    real_start = Supervisor._start

    async def counted(self: Supervisor) -> None:  # observes, then the real start
        nonlocal starting, most
        starting += 1
        most = max(most, starting)
        try:
            await real_start(self)
        finally:
            starting -= 1

    monkeypatch.setattr(Supervisor, "_start", counted)
    spec = SandboxSpec(account_id="a")
    records = await asyncio.gather(*(adapter.create_sandbox(spec) for _ in range(6)))
    results = await asyncio.gather(*(adapter.run(r, ExecRequest(code="echo ok")) for r in records))
    assert [r.stdout for r in results] == ["ok\n"] * 6
    assert most == bound  # they did overlap, up to the bound and no further
    for record in records:
        await adapter.delete_sandbox(record)
    assert adapter_module.START_PARALLEL >= 1
