"""Concurrent first runs on one sandbox (issue 9, bug 1): they used to fail with
"could not start the sandboxed process: 'bash'" when a run reached the supervisor before
the supervisor had been told how to start shells."""

from __future__ import annotations

import asyncio

import pytest

from cerver.adapters.base import ExecRequest, SandboxRecord, SandboxSpec
from cerver.adapters.local import LocalAdapter

pytestmark = pytest.mark.timeout(60)


async def test_concurrent_first_runs_all_succeed(adapter: LocalAdapter) -> None:
    for _ in range(3):  # fresh sandboxes: the supervisor starts with the first runs
        record = await adapter.create_sandbox(
            SandboxSpec(account_id="a", resources={"memory_mb": 512})
        )
        try:

            async def staggered(i: int, record: SandboxRecord = record) -> object:
                await asyncio.sleep(i * 0.01)  # arriving while the supervisor starts
                return await adapter.run(record, ExecRequest(code=f"echo {i}", language="shell"))

            results = await asyncio.gather(
                *(staggered(i) for i in range(16)), return_exceptions=True
            )
            failures = [r for r in results if isinstance(r, BaseException)]
            assert failures == []
            assert sorted(r.stdout for r in results) == sorted(f"{i}\n" for i in range(16))  # type: ignore[union-attr]
        finally:
            await adapter.delete_sandbox(record)
