"""Policy scoring: each candidate gets three parts in 0..1, relative to the best candidate,
weighted by the policy mode. All numbers are documented in docs/recommend.md.

- cost        = cheapest price / this price
- speed       = lowest startup latency / this latency, where latency is
                0.60 * p50 + 0.25 * p95 + 0.15 * p99 of the startup distribution
- reliability = lowest failure rate / this failure rate, failure = 1 - uptime (floored at
                0.0001 so a perfect figure does not divide by zero)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cerver.adapters.catalog import ProviderProfile
from cerver.gateway.models import ProviderScore

LATENCY_WEIGHTS: tuple[float, float, float] = (0.60, 0.25, 0.15)  # p50, p95, p99
FAILURE_FLOOR = 1e-4


@dataclass(frozen=True)
class ModeWeights:
    cost: float
    speed: float
    reliability: float


MODE_WEIGHTS: dict[str, ModeWeights] = {
    "cheapest": ModeWeights(cost=0.80, speed=0.10, reliability=0.10),
    "fastest": ModeWeights(cost=0.10, speed=0.80, reliability=0.10),
    "balanced": ModeWeights(cost=0.40, speed=0.40, reliability=0.20),
    "reliable": ModeWeights(cost=0.10, speed=0.20, reliability=0.70),
}


def startup_latency(profile: ProviderProfile) -> float:
    w50, w95, w99 = LATENCY_WEIGHTS
    s = profile.startup
    return w50 * s.p50_ms + w95 * s.p95_ms + w99 * s.p99


def failure_rate(profile: ProviderProfile) -> float:
    return max(1.0 - profile.uptime_percent / 100.0, FAILURE_FLOOR)


def _ratio(best: float, value: float) -> float:
    if value <= 0:
        return 1.0
    return best / value


def score_all(profiles: Sequence[ProviderProfile], mode: str) -> dict[str, ProviderScore]:
    """Score every profile under ``mode``; parts are relative to the best of ``profiles``."""
    if not profiles:
        return {}
    weights = MODE_WEIGHTS[mode]
    best_price = min(p.price_per_hour_usd for p in profiles)
    best_latency = min(startup_latency(p) for p in profiles)
    best_failure = min(failure_rate(p) for p in profiles)
    scores: dict[str, ProviderScore] = {}
    for p in profiles:
        cost = _ratio(best_price, p.price_per_hour_usd)
        speed = _ratio(best_latency, startup_latency(p))
        reliability = _ratio(best_failure, failure_rate(p))
        total = weights.cost * cost + weights.speed * speed + weights.reliability * reliability
        scores[p.name] = ProviderScore(
            score=round(total, 4),
            cost=round(cost, 4),
            speed=round(speed, 4),
            reliability=round(reliability, 4),
            price_per_hour_usd=p.price_per_hour_usd,
            predicted_startup_ms=p.startup_ms_p50,
            uptime_percent=p.uptime_percent,
            sample_size=p.startup.sample_size,
            estimated=not p.startup.measured,
        )
    return scores


def ranked(scores: dict[str, ProviderScore]) -> list[str]:
    """Best first; ties go to the cheaper, then to the name (deterministic)."""
    return sorted(scores, key=lambda n: (-scores[n].score, scores[n].price_per_hour_usd, n))
