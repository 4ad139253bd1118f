from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from cerver.adapters.catalog import all_profiles
from cerver.errors import BadRequest, NoProviderFits
from cerver.gateway import NOT_EXECUTABLE, RecommendRequest, recommend
from cerver.gateway.confidence import freshness, label_for, margin
from tests.gateway.helpers import TODAY, A, B, make_profile

pytestmark = pytest.mark.timeout(30)

SEED_LONG_FORM = {
    "task": "Boot a preview environment for a Next.js repo",
    "workload": "preview",
    "repo": {
        "name": "branch-monkey",
        "framework": "nextjs",
        "languages": ["typescript"],
        "signals": ["needs-preview", "short-lived"],
    },
    "requirements": {
        "runtime": "node",
        "package_install": True,
        "public_preview": True,
        "persistence_level": "medium",
        "timeout_minutes": 20,
    },
    "policy": {"mode": "balanced", "allowed_providers": ["vercel", "e2b"], "max_startup_ms": 2000},
    "session_name": "preview-session",
}
SEED_SHORT = {
    "task": "Classify 500 support tickets",
    "workload": "general",
    "requirements": {"runtime": "node", "timeout_minutes": 5},
    "policy": {"mode": "cheapest"},
}


def req(mode: str = "balanced", **parts: object) -> RecommendRequest:
    policy = dict(parts.pop("policy", {}))  # type: ignore[call-overload]
    return RecommendRequest.model_validate({"policy": {"mode": mode, **policy}, **parts})


# Hand computation for A (0.10 $/h, startup 100/200/300, 99.9%) and B (0.05, 400/800/1000, 99%):
#   latency A = .6*100 + .25*200 + .15*300 = 155;  B = .6*400 + .25*800 + .15*1000 = 590
#   cost A = .05/.10 = .5, B = 1;  speed A = 1, B = 155/590;  reliability A = 1, B = .001/.01
SPEED_B = 155 / 590
EXPECTED = {
    "cheapest": (0.8 * 0.5 + 0.1 + 0.1, 0.8 + 0.1 * SPEED_B + 0.1 * 0.1, "beta"),
    "fastest": (0.1 * 0.5 + 0.8 + 0.1, 0.1 + 0.8 * SPEED_B + 0.1 * 0.1, "alpha"),
    "balanced": (0.4 * 0.5 + 0.4 + 0.2, 0.4 + 0.4 * SPEED_B + 0.2 * 0.1, "alpha"),
    "reliable": (0.1 * 0.5 + 0.2 + 0.7, 0.1 + 0.2 * SPEED_B + 0.7 * 0.1, "alpha"),
}


@pytest.mark.parametrize("mode", sorted(EXPECTED))
def test_scores_match_hand_computation(mode: str) -> None:
    score_a, score_b, winner = EXPECTED[mode]
    rec = recommend(req(mode), [A, B], today=TODAY)
    assert rec.scores["alpha"].score == pytest.approx(score_a, abs=1e-4)
    assert rec.scores["beta"].score == pytest.approx(score_b, abs=1e-4)
    assert rec.recommended_provider == winner
    assert rec.fallback_order == [n for n in ("alpha", "beta") if n != winner]
    assert rec.mode == mode
    assert rec.excluded == {}


def test_parts_of_the_score_are_reported() -> None:
    rec = recommend(req("balanced"), [A, B], today=TODAY)
    assert rec.scores["beta"].cost == 1.0
    assert rec.scores["alpha"].cost == 0.5
    assert rec.scores["beta"].speed == pytest.approx(SPEED_B, abs=1e-4)
    assert rec.scores["beta"].reliability == pytest.approx(0.1, abs=1e-4)


def test_confidence_from_sample_age_and_margin() -> None:
    # fastest -> alpha. evidence = .1*price(1) + .8*sqrt(100/100) + .1*availability(0) = .9
    # freshness 1 (figures dated today), margin min(1, (.95 - .32017)/.2) = 1
    rec = recommend(req("fastest"), [A, B], today=TODAY)
    assert rec.confidence_value == pytest.approx(0.4 * 0.9 + 0.3 + 0.3, abs=1e-4)
    assert rec.confidence == "high"

    # 25 samples: speed evidence sqrt(.25) = .5 -> evidence .1 + .4 = .5
    few = make_profile("alpha", price=0.10, startup=(100, 200, 300), n=25)
    rec = recommend(req("fastest"), [few, B], today=TODAY)
    assert rec.confidence_value == pytest.approx(0.4 * 0.5 + 0.3 + 0.3, abs=1e-4)

    # figures 197 days old: freshness 1 - (197 - 30) / 335
    old = make_profile(
        "alpha", price=0.10, startup=(100, 200, 300), as_of=TODAY - timedelta(days=197)
    )
    rec = recommend(req("fastest"), [old, B], today=TODAY)
    fresh = 1 - 167 / 335
    assert rec.confidence_value == pytest.approx(0.36 + 0.3 * fresh + 0.3, abs=1e-4)  # 0.8105

    # a near tie: margin (score gap / 0.2) drives confidence down
    twin = make_profile("gamma", price=0.10, startup=(101, 200, 300))
    rec = recommend(req("fastest"), [A, twin], today=TODAY)
    gap = rec.scores["alpha"].score - rec.scores["gamma"].score
    assert 0 < gap < 0.01
    assert rec.confidence_value == pytest.approx(0.36 + 0.3 + 0.3 * gap / 0.2, abs=1e-3)


def test_estimated_unmeasured_figures_give_low_confidence() -> None:
    guess = make_profile(
        "guess",
        price=0.05,
        startup=(100, 200, 300),
        n=0,
        price_estimated=True,
        as_of=TODAY - timedelta(days=400),
    )
    rec = recommend(req("cheapest"), [guess, A], today=TODAY)
    assert rec.recommended_provider == "guess"
    assert rec.confidence == "low"
    assert "Startup figure is an estimate, not yet measured" in rec.secondary_reasons


def test_confidence_helpers() -> None:
    assert freshness(TODAY, TODAY) == 1.0
    assert freshness(TODAY - timedelta(days=365), TODAY) == 0.0
    assert margin(0.9, None) == 1.0
    assert margin(0.9, 0.85) == pytest.approx(0.25)
    assert [label_for(v) for v in (0.7, 0.69, 0.4, 0.39)] == ["high", "medium", "medium", "low"]


def test_filters_exclude_with_reasons() -> None:
    no_preview = make_profile(
        "host",
        price=0.01,
        startup=(10, 20, 30),
        public_preview=False,
        unsupported_reasons={"public_preview": "host has no public URL"},
    )
    short = make_profile("short", price=0.02, startup=(10, 20, 30), max_timeout=10)
    low = make_profile("low", price=0.02, startup=(10, 20, 30), persistence="low")
    py_only = make_profile("py", price=0.02, startup=(10, 20, 30), runtimes=("python",))
    request = req(
        "cheapest",
        requirements={
            "public_preview": True,
            "timeout_minutes": 20,
            "persistence_level": "medium",
            "runtime": "node",
        },
    )
    rec = recommend(request, [no_preview, short, low, py_only, A], today=TODAY)
    assert rec.recommended_provider == "alpha"
    assert rec.excluded["host"] == "host has no public URL"
    assert rec.excluded["short"] == "timeout 20 min exceeds the 10 min limit"
    assert rec.excluded["low"] == "persistence 'low' is below the required 'medium'"
    assert rec.excluded["py"].startswith("runtime 'node' not offered")
    assert set(rec.scores) == {"alpha"}


def test_policy_limits_exclude() -> None:
    rec = recommend(
        req("cheapest", policy={"max_startup_ms": 300, "max_price_per_hour": 0.2}),
        [A, B],
        today=TODAY,
    )
    assert rec.recommended_provider == "alpha"
    assert "exceeds max_startup_ms 300" in rec.excluded["beta"]
    rec = recommend(req("fastest", policy={"blocked_providers": ["alpha"]}), [A, B], today=TODAY)
    assert rec.recommended_provider == "beta"
    assert rec.excluded["alpha"] == "in policy.blocked_providers"


def test_gpu_requirement_uses_generic_reason_without_a_specific_one() -> None:
    rec = recommend(
        req(requirements={"gpu": True}),
        [A, make_profile("gpu", price=1.0, startup=(100, 200, 300), gpu=True)],
        today=TODAY,
    )
    assert rec.recommended_provider == "gpu"
    assert rec.excluded["alpha"] == "alpha does not support GPUs"


def test_no_provider_fits_names_the_requirement_per_provider() -> None:
    with pytest.raises(NoProviderFits) as info:
        recommend(req(requirements={"runtime": "ruby", "gpu": True}), [A, B], today=TODAY)
    details = info.value.details
    assert set(details["excluded"]) == {"alpha", "beta"}
    assert details["requirements"]["alpha"] == ["requirements.runtime", "requirements.gpu"]
    assert "ruby" in details["excluded"]["beta"]
    assert info.value.status == 422


def test_unknown_allowed_provider_is_a_bad_request_listing_valid_ones() -> None:
    with pytest.raises(BadRequest) as info:
        recommend(req(policy={"allowed_providers": ["alpha", "zeta"]}), [A, B], today=TODAY)
    assert info.value.details == {"unknown": ["zeta"], "valid": ["alpha", "beta"]}


def test_unknown_mode_is_rejected_naming_the_modes() -> None:
    with pytest.raises(ValidationError) as info:
        req("random")
    text = str(info.value)
    for mode in ("cheapest", "fastest", "balanced", "reliable"):
        assert mode in text


def test_unknown_field_is_rejected_naming_it() -> None:
    with pytest.raises(ValidationError) as info:
        RecommendRequest.model_validate({**SEED_SHORT, "colour": "blue"})
    assert info.value.errors()[0]["loc"] == ("colour",)
    with pytest.raises(ValidationError) as info:
        RecommendRequest.model_validate({"requirements": {"runtim": "node"}})
    assert info.value.errors()[0]["loc"] == ("requirements", "runtim")


def test_only_executable_providers_are_recommended() -> None:
    rec = recommend(req("fastest"), [A, B], {"beta"}, today=TODAY)
    assert rec.recommended_provider == "beta"
    assert rec.excluded == {"alpha": NOT_EXECUTABLE}
    assert set(rec.scores) == {"alpha", "beta"}  # still scored
    assert rec.executable == ["beta"]
    assert rec.fallback_order == []
    with pytest.raises(NoProviderFits) as info:
        recommend(req("fastest"), [A, B], set(), today=TODAY)
    assert info.value.details["excluded"] == {"alpha": NOT_EXECUTABLE, "beta": NOT_EXECUTABLE}


def test_seed_long_form_body_validates_and_routes() -> None:
    request = RecommendRequest.model_validate(SEED_LONG_FORM)
    rec = recommend(request, all_profiles(), today=TODAY)
    assert rec.recommended_provider in {"vercel", "e2b"}
    assert set(rec.scores) == {"vercel", "e2b"}
    assert rec.fallback_order == [n for n in ("vercel", "e2b") if n != rec.recommended_provider]
    assert "Startup within target (p50 491 ms <= 2000 ms)" in rec.secondary_reasons
    assert "Public previews supported" in rec.secondary_reasons
    assert rec.confidence in {"high", "medium", "low"}
    routing = rec.routing.model_dump()
    assert set(routing) == {
        "recommended_provider",
        "confidence",
        "primary_reason",
        "secondary_reasons",
        "fallback_order",
        "canary_run",
    }
    assert routing["canary_run"] is False


def test_seed_short_body_validates_and_routes() -> None:
    request = RecommendRequest.model_validate(SEED_SHORT)
    rec = recommend(request, all_profiles(), today=TODAY)
    assert rec.mode == "cheapest"
    assert rec.recommended_provider in {"local", "ray", "p69", "relay"}  # opportunity cost or 0
    assert rec.primary_reason.startswith("Cheapest fit for general workloads")
