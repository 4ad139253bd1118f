from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from cerver.adapters.catalog import all_profiles, get_profile
from cerver.errors import BadRequest, NoProviderFits
from cerver.stress.aggregate import rank, report, stress_score, trim
from cerver.stress.kinds import KINDS, get_kind
from cerver.stress.models import StressRequest
from cerver.stress.runner import plan_stress
from cerver.stress.sample import RunSamples
from cerver.stress.simulate import SimParams, draw_runs, draw_runs_python

pytestmark = pytest.mark.timeout(30)


def test_trim_drops_five_percent_each_side() -> None:
    values = np.arange(100, dtype=np.float64)[::-1]  # unsorted on purpose
    kept, k = trim(values)
    assert k == 5
    assert kept[0] == 5 and kept[-1] == 94 and kept.size == 90
    small, k_small = trim(np.array([3.0, 1.0, 2.0]))  # floor(0.15) = 0: nothing trimmed
    assert k_small == 0 and list(small) == [1.0, 2.0, 3.0]


def test_stress_score_by_hand() -> None:
    # ceiling 10 s; median 1 s -> .9, p95 2 s -> .8, p99 4 s -> .6
    # 100 * 0.9 success * (.6*.9 + .25*.8 + .15*.6) = 90 * .83 = 74.7
    assert stress_score(1000, 2000, 4000, 0.9, 10_000) == pytest.approx(74.7)
    # a metric at or above the ceiling scores 0, never negative
    assert stress_score(20_000, 30_000, 40_000, 1.0, 10_000) == 0.0


def test_report_by_hand() -> None:
    kind = get_kind("code_exec")  # ceiling 5000 ms, concurrency 1
    ok = np.arange(1, 101, dtype=np.float64) * 10  # 10, 20, ..., 1000 ms
    samples = RunSamples("x", ok, runs=125, total_ms=float(ok.sum()) + 25 * 100.0)
    r = report(samples, kind, price_per_hour_usd=3.6)
    # trimmed: 60 .. 950 (90 values); linear-interpolated percentiles of those
    kept = np.arange(6, 96) * 10.0
    p50, p95, p99 = np.percentile(kept, [50, 95, 99])
    assert (r.p50_ms, r.p95_ms, r.p99_ms) == pytest.approx((p50, p95, p99), abs=1e-3)
    assert r.p50_ms == pytest.approx(505.0)
    assert r.success_rate == pytest.approx(0.8)
    assert r.trimmed_each_side == 5
    expected = (
        100 * 0.8 * (0.6 * (1 - p50 / 5000) + 0.25 * (1 - p95 / 5000) + 0.15 * (1 - p99 / 5000))
    )
    assert r.score == pytest.approx(expected, abs=1e-3)
    # cost: 3.6 $/h = $0.000001 per ms; mean run time = (50500 + 2500) / 125 = 424 ms
    assert r.cost_per_run_usd == pytest.approx(424 * 1e-6)


def test_all_failed_scores_zero() -> None:
    r = report(
        RunSamples("x", np.array([]), runs=3, total_ms=30.0, errors=["e"] * 3),
        get_kind("code_exec"),
        1.0,
    )
    assert r.score == 0.0 and r.p50_ms is None and r.success_rate == 0.0 and r.errors == ["e"] * 3


def test_rank_breaks_ties_by_cost() -> None:
    kind = get_kind("code_exec")
    same = np.full(10, 100.0)
    reports = {
        "dear": report(RunSamples("dear", same, 10, 1000.0), kind, 1.0),
        "cheap": report(RunSamples("cheap", same, 10, 1000.0), kind, 0.5),
        "slow": report(RunSamples("slow", same * 10, 10, 10_000.0), kind, 0.1),
    }
    assert rank(reports) == ["cheap", "dear", "slow"]


def test_simulated_percentiles_follow_the_profile() -> None:
    profile = get_profile("e2b")
    params = SimParams.of(profile, get_kind("burst"))
    assert params.draws_per_run == 10
    single = SimParams.of(profile, KINDS["code_exec"])
    samples = draw_runs(single, 200_000, 7)
    assert np.median(samples.ok_latency_ms) == pytest.approx(profile.exec.p50_ms, rel=0.02)
    assert np.percentile(samples.ok_latency_ms, 95) == pytest.approx(profile.exec.p95_ms, rel=0.03)
    assert samples.successes / samples.runs == pytest.approx(profile.success_rate, abs=0.001)
    # a burst run waits for the slowest of 10 creates
    burst = draw_runs(params, 20_000, 7)
    assert np.median(burst.ok_latency_ms) > profile.startup.p95_ms * 0.9
    # the plain-Python baseline draws the same model
    py = draw_runs_python(single, 20_000, 7)
    assert np.median(py.ok_latency_ms) == pytest.approx(profile.exec.p50_ms, rel=0.05)


def test_same_seed_same_draws() -> None:
    params = SimParams.of(get_profile("modal"), KINDS["preview_launch"])
    a, b = draw_runs(params, 1000, 3), draw_runs(params, 1000, 3)
    assert np.array_equal(a.ok_latency_ms, b.ok_latency_ms)


def test_unknown_kind_lists_kinds() -> None:
    with pytest.raises(BadRequest) as info:
        get_kind("marathon")
    assert info.value.details["valid"] == ["burst", "code_exec", "preview_launch"]


@pytest.mark.parametrize(
    ("body", "limit"),
    [
        ({"sample_size": 0}, "greater than 0"),
        ({"sample_size": 100_001}, "100000"),
        ({"sample_size": 51, "mode": "canary"}, "50"),
        ({"sample_size": -1}, "greater than 0"),
    ],
)
def test_sample_size_limits(body: dict[str, object], limit: str) -> None:
    with pytest.raises(ValidationError) as info:
        StressRequest.model_validate(body)
    assert limit in str(info.value)


def test_seed_stress_body_validates_and_async_alias() -> None:
    body = {
        "task": "Compare preview launch backends",
        "kind": "preview_launch",
        "workload": "preview",
        "requirements": {
            "runtime": "node",
            "public_preview": True,
            "package_install": True,
            "timeout_minutes": 20,
        },
        "providers": ["vercel", "e2b"],
        "sample_size": 5,
    }
    request = StressRequest.model_validate(body)
    assert request.mode == "simulate" and not request.run_async
    assert StressRequest.model_validate({**body, "async": True}).run_async
    plan = plan_stress(request, all_profiles())
    assert [p.name for p in plan.profiles] == ["vercel", "e2b"]
    assert not plan.is_async


def test_plan_rejects_unknown_and_excludes_unfit_providers() -> None:
    with pytest.raises(BadRequest) as info:
        plan_stress(StressRequest(providers=["e2b", "nope"]), all_profiles())
    assert info.value.details["unknown"] == ["nope"]
    plan = plan_stress(
        StressRequest.model_validate(
            {"providers": ["local", "e2b"], "requirements": {"public_preview": True}}
        ),
        all_profiles(),
    )
    assert [p.name for p in plan.profiles] == ["e2b"]
    assert "public preview" in plan.excluded["local"]
    with pytest.raises(NoProviderFits):
        plan_stress(
            StressRequest.model_validate({"providers": ["local"], "requirements": {"gpu": True}}),
            all_profiles(),
        )
