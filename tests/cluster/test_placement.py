"""The `ray` provider places each sandbox by its resources and node labels, refuses what no
node can ever host (saying what is missing), and does not hang on what must wait."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from cerver.adapters import registry
from cerver.adapters.base import ComputeAdapter, ExecRequest, Resources, SandboxSpec
from cerver.adapters.raycluster import PLACEMENT_WAIT_S, RaySandboxData
from cerver.config import Settings
from cerver.errors import ComputeUnavailable
from tests.cluster.conftest import Nodes

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def ray_adapter(nodes: Nodes, cluster_settings: Settings) -> AsyncIterator[ComputeAdapter]:
    adapter = registry.get("ray")(cluster_settings)
    yield adapter
    await adapter.close()


def spec(**kwargs: object) -> SandboxSpec:
    return SandboxSpec(account_id="acct_cluster", **kwargs)  # type: ignore[arg-type]


async def test_label_and_resource_placement(ray_adapter: ComputeAdapter, nodes: Nodes) -> None:
    wanted = {
        "b": spec(options={"node_labels": {"zone": "b"}}),
        "a": spec(
            resources=Resources(cpu=0.5, custom={"sbx": 1}),
            options={"node_labels": {"zone": "!b"}},
        ),
    }
    for role, request in wanted.items():
        record = await ray_adapter.create_sandbox(request)
        try:
            data = RaySandboxData.model_validate(record.data)
            assert data.node_id == nodes.workers[role].node_id
            result = await ray_adapter.run(record, ExecRequest(code="echo placed"))
            assert result.stdout == "placed\n"
        finally:
            await ray_adapter.delete_sandbox(record)
        assert not await ray_adapter.is_alive(record)


@pytest.mark.parametrize("request_,missing", [
    (spec(resources=Resources(gpu=1)), "1 GPU requested, the largest node has 0 GPU"),
    (spec(resources=Resources(cpu=8)), "8 CPU requested, the largest node has 1 CPU"),
    (spec(options={"node_labels": {"zone": "c"}}),
     "node label zone=c requested, nodes have zone in ['a', 'b']"),
    (spec(resources=Resources(custom={"tpu": 1})), "1 tpu requested, the largest node has 0 tpu"),
])  # fmt: skip
async def test_infeasible_is_409_naming_what_is_missing(
    ray_adapter: ComputeAdapter, request_: SandboxSpec, missing: str
) -> None:
    started = time.monotonic()
    with pytest.raises(ComputeUnavailable) as info:
        await ray_adapter.create_sandbox(request_)
    assert time.monotonic() - started < 5  # refused at once, not after the wait
    assert info.value.status == 409
    assert info.value.details["state"] == "infeasible"
    assert missing in info.value.details["missing"]
    assert missing in info.value.message


async def test_feasible_but_busy_answers_409_after_bounded_wait(
    ray_adapter: ComputeAdapter,
) -> None:
    # Each worker has 1 CPU; the head too. Take both workers' CPUs, then ask for another.
    held = [
        await ray_adapter.create_sandbox(
            spec(resources=Resources(cpu=1), options={"node_labels": {"zone": z}})
        )
        for z in ("a", "b")
    ]
    try:
        started = time.monotonic()
        with pytest.raises(ComputeUnavailable) as info:
            await ray_adapter.create_sandbox(
                spec(resources=Resources(cpu=1), options={"node_labels": {"zone": "in(a,b)"}})
            )
        waited = time.monotonic() - started
        assert PLACEMENT_WAIT_S <= waited < PLACEMENT_WAIT_S + 10
        assert info.value.details["state"] == "waiting_for_capacity"
        assert "waiting for capacity" in info.value.message
    finally:
        for record in held:
            await ray_adapter.delete_sandbox(record)
    # The withdrawn request took nothing: the capacity is usable again at once.
    again = await ray_adapter.create_sandbox(
        spec(resources=Resources(cpu=1), options={"node_labels": {"zone": "a"}})
    )
    await ray_adapter.delete_sandbox(again)
