"""Stress-test jobs are bounded (issue 10, finding 8): a full job actor refuses new jobs
while every kept job runs, finished jobs are forgotten after their TTL, and a canary job is
its owner's only."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
import ray

from cerver.adapters.catalog import all_profiles
from cerver.config import Settings
from cerver.errors import RateLimited
from cerver.stress.jobs import StressJobs
from cerver.stress.models import StressRequest
from cerver.stress.runner import plan_stress, skeleton

pytestmark = pytest.mark.usefixtures("ray_runtime")


def _job(sample_size: int):  # type: ignore[no-untyped-def]
    request = StressRequest.model_validate(
        {"kind": "code_exec", "providers": ["e2b"], "sample_size": sample_size, "async": True}
    )
    plan = plan_stress(request, all_profiles())
    return plan, skeleton(plan)


@pytest.mark.timeout(90)
async def test_jobs_are_bounded_and_finished_ones_expire(server_settings: Settings) -> None:
    settings = server_settings.model_copy(update={"stress_jobs_max": 2, "stress_job_ttl_s": 60.0})
    actor = StressJobs.remote()  # type: ignore[attr-defined]
    try:
        first, second = _job(100_000), _job(100_000)
        await actor.start.remote(*first, settings)
        await actor.start.remote(*second, settings)
        with pytest.raises(RateLimited) as refused:
            try:
                await actor.start.remote(*_job(10), settings)
            except ray.exceptions.RayTaskError as exc:
                raise exc.cause from None
        assert refused.value.details["limit"] == "stress_jobs_max"
        assert await actor.count.remote() == 2
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            polled = [await actor.get.remote(j[1].id) for j in (first, second)]
            if all(p is not None and p.status != "running" for p in polled):
                break
            await asyncio.sleep(0.1)
        # Both finished: a new job makes room by forgetting the oldest finished one.
        third = _job(10)
        await actor.start.remote(*third, settings)
        assert await actor.get.remote(first[1].id) is None
        assert await actor.get.remote(second[1].id) is not None
        assert await actor.count.remote() == 2
        # With a 1 s TTL, finished jobs are forgotten once it has passed.
        short = settings.model_copy(update={"stress_job_ttl_s": 1.0})
        fourth = _job(10)
        await actor.start.remote(*fourth, short)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and await actor.get.remote(fourth[1].id) is not None:
            await asyncio.sleep(0.2)
        assert await actor.get.remote(fourth[1].id) is None
        assert await actor.get.remote(third[1].id) is None
        assert await actor.count.remote() == 0
    finally:
        ray.kill(actor)


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_canary_job_is_the_owners_only(
    api: httpx.Client, other_api: httpx.Client, anon: httpx.Client
) -> None:
    canary = {"mode": "canary", "kind": "code_exec", "sample_size": 2, "async": True}
    r = api.post("/gateway/stress-tests", json=canary)
    assert r.status_code == 200, r.text
    job = r.json()["id"]
    for stranger in (other_api, anon):
        hidden = stranger.get(f"/gateway/stress-tests/{job}")
        assert hidden.status_code == 404 and hidden.json()["error"]["code"] == "not_found"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        mine = api.get(f"/gateway/stress-tests/{job}")
        assert mine.status_code == 200
        if mine.json()["status"] != "running":
            break
        time.sleep(0.2)
    assert mine.json()["status"] == "completed", mine.text
    assert other_api.get(f"/gateway/stress-tests/{job}").status_code == 404
