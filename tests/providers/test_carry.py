"""Carrying a workspace between providers on a swap (no Ray): local -> vercel or daytona
(their fakes) -> local keeps files and modes, leaves Cerver's own files behind, and says so when a
workspace is too large to carry."""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cerver.actors.carry import carry_workspace
from cerver.adapters import registry
from cerver.adapters.base import ComputeAdapter, ExecRequest, SandboxRecord, SandboxSpec
from cerver.config import Settings, prepare_home

pytestmark = pytest.mark.timeout(90)


REMOTE = {"vercel": {"vercel_token": "carry-token"}, "daytona": {"daytona_api_key": "carry-key"}}


@pytest.fixture(params=sorted(REMOTE))
async def pair(
    request: pytest.FixtureRequest, vercel_url: str, daytona_url: str
) -> AsyncIterator[tuple[ComputeAdapter, ComputeAdapter]]:
    # Not under pytest's 0700 tmp dirs: sandbox uids must reach their workspace.
    home = Path(tempfile.mkdtemp(prefix="cerver-carry-", dir="/tmp"))
    os.chmod(home, 0o711)
    settings = Settings(
        home=home,
        database_url=f"sqlite:///{home / 'c.db'}",
        vercel_api_url=vercel_url,
        daytona_api_url=daytona_url,
    )
    prepare_home(settings)
    local = registry.get("local")(settings)
    cloud = registry.get(request.param)(settings, REMOTE[request.param])
    yield local, cloud
    await local.close()
    await cloud.close()


async def _sandbox(adapter: ComputeAdapter) -> SandboxRecord:
    return await adapter.create_sandbox(SandboxSpec(account_id="acct"))


async def test_there_and_back(pair: tuple[ComputeAdapter, ComputeAdapter]) -> None:
    local, cloud = pair
    home, away = await _sandbox(local), await _sandbox(cloud)
    try:
        setup = "mkdir -p d && echo one > d/a.txt && echo true > b.sh && chmod 755 b.sh"
        assert (await local.run(home, ExecRequest(code=setup))).exit_code == 0
        await local.set_state(home, {"stays": True})
        there = await carry_workspace(local, home, cloud, away, limit=1 << 20)
        assert there["carried"] is True and there["files"] == 2, there
        seen = await cloud.run(away, ExecRequest(code="cat d/a.txt; ./b.sh >/dev/null; echo $?"))
        assert seen.stdout == "one\n0\n", seen
        assert (await cloud.get_state(away)).user_state == {}  # state is not a file to carry
        await cloud.run(away, ExecRequest(code="echo three > c.txt"))
        back = await carry_workspace(cloud, away, local, home, limit=1 << 20)
        assert back["carried"] is True and back["files"] >= 3, back
        assert (await local.run(home, ExecRequest(code="cat c.txt"))).stdout == "three\n"
    finally:
        await local.delete_sandbox(home)
        await cloud.delete_sandbox(away)


async def test_too_large_is_not_carried_and_says_why(
    pair: tuple[ComputeAdapter, ComputeAdapter],
) -> None:
    local, cloud = pair
    home, away = await _sandbox(local), await _sandbox(cloud)
    try:
        await local.run(home, ExecRequest(code="head -c 50000 /dev/urandom > big.bin"))
        answer = await carry_workspace(local, home, cloud, away, limit=1000)
        assert answer["carried"] is False and "1000" in answer["reason"], answer
        missing = await cloud.run(away, ExecRequest(code="test -e big.bin; echo $?"))
        assert missing.stdout == "1\n"
    finally:
        await local.delete_sandbox(home)
        await cloud.delete_sandbox(away)
