from __future__ import annotations

import math
from datetime import date

import pytest

from cerver.adapters.catalog import Z95, Z99, all_profiles, get_profile, names
from cerver.errors import BadRequest

EXPECTED = {"local", "ray", "p69", "relay", "e2b", "vercel", "cloudflare", "daytona", "modal"}


@pytest.mark.timeout(30)
def test_one_profile_per_provider() -> None:
    assert {p.name for p in all_profiles()} == EXPECTED
    assert len(all_profiles()) == len(EXPECTED)
    assert names() == sorted(EXPECTED)


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("name", "p50", "p95", "price"),
    [
        ("daytona", 186, 492, 0.0828),
        ("e2b", 491, 685, 0.0828),
        ("modal", 1723, 2309, 0.119),
        ("vercel", 671, 936, 0.149),
    ],
)
def test_public_figures(name: str, p50: float, p95: float, price: float) -> None:
    profile = get_profile(name)
    assert profile.startup_ms_p50 == p50
    assert profile.startup.p95_ms == p95
    assert profile.startup.sample_size == 100
    assert profile.startup.as_of == date(2026, 5, 1)
    assert "100 sequential runs" in profile.startup.source
    assert profile.price_per_hour_usd == price


@pytest.mark.timeout(30)
def test_cloudflare_price_and_estimated_latency() -> None:
    cf = get_profile("cloudflare")
    assert cf.price_per_hour_usd == 0.090
    assert cf.startup.sample_size == 0
    assert not cf.startup.measured


@pytest.mark.timeout(30)
def test_vercel_p95_is_marked_estimated() -> None:
    vercel = get_profile("vercel")
    assert "p95_ms" in vercel.startup.estimated
    assert "p50_ms" not in vercel.startup.estimated
    assert "estimated" in vercel.startup.source


@pytest.mark.timeout(30)
def test_local_price_is_an_opportunity_cost_and_latency_an_estimate() -> None:
    local = get_profile("local")
    assert local.price_per_hour_usd == 0.0416
    assert "opportunity cost" in local.price.source
    assert local.price.estimated
    assert not local.startup.measured
    assert "estimate" in local.startup.source


@pytest.mark.timeout(30)
def test_every_figure_is_dated_and_sourced() -> None:
    for p in all_profiles():
        for fig in (p.startup, p.exec, p.install):
            assert fig.source and fig.as_of and fig.sample_size >= 0
            assert fig.p50_ms <= fig.p95_ms <= fig.p99
        assert p.price.source and p.price.as_of
        assert p.availability.source and 0 < p.uptime_percent <= 100
        # every missing capability of a boolean kind has a reason or a generic one
        assert set(p.unsupported_reasons) <= {"public_preview", "gpu", "network_control"}


@pytest.mark.timeout(30)
def test_missing_p99_comes_from_the_lognormal_fit() -> None:
    e2b = get_profile("e2b").startup
    sigma = math.log(685 / 491) / Z95
    assert e2b.sigma == pytest.approx(sigma)
    assert e2b.p99 == pytest.approx(math.exp(math.log(491) + Z99 * sigma), abs=0.1)
    assert "p99_ms" in e2b.estimated


@pytest.mark.timeout(30)
def test_unknown_provider_lists_valid_names() -> None:
    with pytest.raises(BadRequest) as info:
        get_profile("nope")
    assert info.value.details["valid"] == sorted(EXPECTED)
    assert "daytona" in info.value.message
