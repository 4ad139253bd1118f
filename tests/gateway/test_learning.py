from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cerver.adapters.catalog import effective_profiles, get_profile
from cerver.gateway import RecommendRequest, recommend
from cerver.store.db import engine_for
from cerver.store.observations import Observation, Observations
from cerver.stress.canary import CanarySample
from cerver.stress.runner import observations_of

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def observations(tmp_path: Path) -> Observations:
    return Observations(engine_for("sqlite:///" + str(tmp_path / "x.db")))


def test_record_and_query_recent(observations: Observations) -> None:
    t0 = time.time()
    observations.record("e2b", "startup_ms", 500.0, True, "canary", ts=t0 - 100)
    observations.record("e2b", "startup_ms", 900.0, False, "canary", ts=t0 - 10)
    observations.record("local", "exec_ms", 12.0, True, "session", ts=t0 - 5)
    newest = observations.recent()
    assert [o.value for o in newest] == [12.0, 900.0, 500.0]
    assert [o.value for o in observations.recent("e2b", "startup_ms")] == [900.0, 500.0]
    assert observations.recent("e2b", since=t0 - 50)[0].ok is False
    assert observations.recent(limit=1)[0].provider == "local"


def test_effective_profiles_merge_measurements(observations: Observations) -> None:
    moment = datetime(2026, 11, 20, 12, tzinfo=UTC)
    rows = [
        Observation(
            provider="daytona",
            metric="startup_ms",
            value=float(v),
            ok=True,
            source="canary",
            ts=moment.timestamp(),
        )
        for v in range(2000, 2200, 10)  # 20 samples, 2000..2190 ms
    ]
    observations.record_many(rows)
    profile = next(p for p in effective_profiles(observations, now=moment) if p.name == "daytona")
    assert profile.startup.sample_size == 20
    assert profile.startup.p50_ms == pytest.approx(2095.0)
    assert profile.startup.as_of.isoformat() == "2026-11-20"
    assert profile.startup.measured and "measured here" in profile.startup.source
    assert profile.availability.sample_size == 20 and profile.uptime_percent == 100.0
    # untouched providers keep their published figures
    e2b = next(p for p in effective_profiles(observations, now=moment) if p.name == "e2b")
    assert e2b == get_profile("e2b")


def test_too_few_or_too_old_measurements_are_ignored(observations: Observations) -> None:
    moment = datetime(2026, 11, 20, tzinfo=UTC)
    for v in (5000.0, 5000.0):  # below MIN_MEASURED
        observations.record("daytona", "startup_ms", v, ts=moment.timestamp())
    for _ in range(10):  # older than the 30-day window
        observations.record("daytona", "startup_ms", 9000.0, ts=moment.timestamp() - 40 * 86400)
    daytona = next(p for p in effective_profiles(observations, now=moment) if p.name == "daytona")
    assert daytona.startup == get_profile("daytona").startup


def test_recommendation_follows_measurement(observations: Observations) -> None:
    request = RecommendRequest.model_validate(
        {"policy": {"mode": "fastest", "allowed_providers": ["daytona", "e2b"]}}
    )
    before = recommend(request, effective_profiles(observations))
    assert before.recommended_provider == "daytona"  # 186 ms vs 491 ms published

    # canary runs here say daytona got slow (and one of them failed)
    samples = [
        CanarySample("daytona", ok=True, latency_ms=0, steps_ms={"startup_ms": 1500.0 + i})
        for i in range(30)
    ] + [CanarySample("daytona", ok=False, latency_ms=0, steps_ms={"startup_ms": 30_000.0})]
    observations.record_many(observations_of(samples))

    after = recommend(request, effective_profiles(observations))
    assert after.recommended_provider == "e2b"
    assert after.fallback_order == ["daytona"]
    assert after.scores["daytona"].sample_size == 30
    assert after.scores["daytona"].predicted_startup_ms == pytest.approx(1514.5)
    assert not after.scores["daytona"].estimated
