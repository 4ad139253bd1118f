"""Finding 8's sandbox items of issue 10: a FIFO in the workspace blocked the files API;
Ray's internal resources (``node:__internal_head__``) were requestable by tenants."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from cerver.adapters.base import ExecRequest, Resources, SandboxRecord, SandboxSpec
from cerver.adapters.local import LocalAdapter, LocalSandboxData
from cerver.adapters.raycluster.placement import placement_from
from cerver.errors import BadRequest

pytestmark = pytest.mark.timeout(30)


async def test_a_fifo_in_the_workspace_is_refused_not_waited_on(
    adapter: LocalAdapter, sandbox: SandboxRecord
) -> None:
    made = await adapter.run(sandbox, ExecRequest(code="mkfifo pipe && mknod -h 2>/dev/null; ls"))
    assert "pipe" in made.stdout
    data = LocalSandboxData.model_validate(sandbox.data)
    assert os.path.exists(os.path.join(data.workspace, "pipe"))
    started = time.monotonic()
    with pytest.raises(BadRequest, match="not a regular file"):
        await asyncio.wait_for(adapter.read_file(sandbox, "pipe"), 5)
    with pytest.raises(BadRequest, match="not a regular file"):
        await asyncio.wait_for(adapter.write_file(sandbox, "pipe", b"x"), 5)
    assert time.monotonic() - started < 8  # (it used to hang)
    await adapter.write_file(sandbox, "plain.txt", b"still fine")
    assert await adapter.read_file(sandbox, "plain.txt") == b"still fine"


@pytest.mark.parametrize(
    "name",
    ["node:__internal_head__", "node:10.0.0.1", "accelerator_type:A100", "CPU_group_abc123",
     "bundle_group_0_abc", "", "a" * 65],
)  # fmt: skip
def test_rays_own_resources_are_not_requestable(name: str) -> None:
    spec = SandboxSpec(account_id="a", resources=Resources(custom={name: 1}))
    with pytest.raises(BadRequest, match="not a resource a request may ask for"):
        placement_from(spec)


def test_operator_defined_resources_still_are() -> None:
    spec = SandboxSpec(account_id="a", resources=Resources(custom={"fast-disk": 1, "tpu.v4": 2}))
    assert placement_from(spec).custom == {"fast-disk": 1.0, "tpu.v4": 2.0}
