"""Stress tests on real Ray: simulation fan-out, the job actor, canary on ``local``."""

from __future__ import annotations

import asyncio
import time

import pytest
import ray

from cerver.adapters import registry
from cerver.adapters.catalog import all_profiles
from cerver.config import Settings
from cerver.errors import ComputeUnavailable
from cerver.store.db import engine_for
from cerver.store.observations import Observations
from cerver.stress import service
from cerver.stress.jobs import JOBS_ACTOR_NAME
from cerver.stress.kinds import KINDS
from cerver.stress.models import StressRequest, StressResult
from cerver.stress.simulate import SimParams, simulate_tasks

pytestmark = pytest.mark.usefixtures("ray_runtime")


@pytest.mark.timeout(60)
def test_simulation_fans_out_in_chunks() -> None:
    params = [SimParams.of(p, KINDS["code_exec"]) for p in all_profiles()[:2]]
    refs = simulate_tasks(params, 25_000, seed=1, chunk=10_000)
    assert len(refs) == 6  # 2 providers x chunks of 10k, 10k, 5k
    parts = ray.get(refs)
    assert sum(p.runs for p in parts) == 50_000
    assert {p.provider for p in parts} == {params[0].provider, params[1].provider}


@pytest.mark.timeout(60)
async def test_small_simulation_answers_synchronously(server_settings: Settings) -> None:
    request = StressRequest.model_validate(
        {"kind": "preview_launch", "providers": ["vercel", "e2b"], "sample_size": 500, "seed": 3}
    )
    result = await service.submit(request, all_profiles(), settings=server_settings)
    assert result.status == "completed" and result.progress == 1.0
    assert set(result.results) == {"vercel", "e2b"}
    assert result.results["e2b"].samples == 500
    assert result.ranking[0] == result.recommendation.provider  # type: ignore[union-attr]
    assert all(0 <= r.score <= 100 for r in result.results.values())


@pytest.mark.timeout(120)
async def test_large_simulation_runs_as_a_polled_job(server_settings: Settings) -> None:
    request = StressRequest.model_validate(
        {"kind": "burst", "providers": ["daytona", "e2b", "modal"], "sample_size": 100_000}
    )
    started = await service.submit(request, all_profiles(), settings=server_settings)
    assert started.status == "running" and started.poll_url == f"/gateway/stress-tests/{started.id}"
    # any process can reach the job actor by name
    assert ray.get_actor(JOBS_ACTOR_NAME, namespace=server_settings.ray_namespace)
    seen: list[float] = []
    result: StressResult = started
    for _ in range(600):
        result = await service.poll(started.id, server_settings)
        seen.append(result.progress)
        if result.status != "running":
            break
        await asyncio.sleep(0.05)
    assert result.status == "completed", result.error
    assert seen == sorted(seen) and seen[-1] == 1.0
    assert result.results["modal"].samples == 100_000
    assert result.recommendation is not None and result.recommendation.provider == "daytona"


@pytest.mark.timeout(30)
async def test_poll_unknown_job_is_not_found(server_settings: Settings) -> None:
    from cerver.errors import NotFound

    with pytest.raises(NotFound):
        await service.poll("stj_nope", server_settings)


@pytest.mark.timeout(30)
async def test_canary_refuses_providers_the_account_cannot_execute(
    server_settings: Settings,
) -> None:
    request = StressRequest.model_validate(
        {
            "mode": "canary",
            "kind": "code_exec",
            "providers": ["e2b", "cloudflare"],
            "sample_size": 1,
        }
    )
    with pytest.raises(ComputeUnavailable) as info:
        await service.submit(
            request, all_profiles(), settings=server_settings, account_id="acc", executable=set()
        )
    reasons = info.value.details["not_executable"]
    assert "advice only" in reasons["cloudflare"]
    assert info.value.status == 409


@pytest.mark.timeout(120)
@pytest.mark.skipif(not registry.has_adapter("local"), reason="local adapter not registered yet")
async def test_canary_on_local_measures_records_and_cleans_up(server_settings: Settings) -> None:
    sandboxes = server_settings.sandboxes_dir
    before = set(sandboxes.iterdir()) if sandboxes.exists() else set()
    started = time.time()
    request = StressRequest.model_validate(
        {
            "mode": "canary",
            "kind": "code_exec",
            "providers": ["local"],
            "sample_size": 3,
            "requirements": {"runtime": "python"},
        }
    )
    result = await service.submit(
        request,
        all_profiles(),
        settings=server_settings,
        account_id="acc_canary",
        executable={"local"},
    )
    assert result.status == "completed"
    local = result.results["local"]
    assert local.samples == 3
    assert local.successes == 3, local.errors
    assert local.p50_ms is not None and local.p50_ms > 0
    # Sessions of other tests on the shared server record "session" observations of local
    # too: look at what this canary recorded since it started.
    recorded = Observations(engine_for(server_settings.database_url)).recent("local", since=started)
    canary = [o for o in recorded if o.source == "canary"]
    assert {o.metric for o in canary} >= {"startup_ms", "exec_ms"}
    assert sum(o.metric == "exec_ms" for o in canary) >= 3
    after = set(sandboxes.iterdir()) if sandboxes.exists() else set()
    assert after <= before, f"canary left sandboxes behind: {after - before}"
