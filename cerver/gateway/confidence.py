"""Confidence in a recommendation, from the data behind it (see docs/recommend.md).

    value = 0.40 * evidence + 0.30 * freshness + 0.30 * margin

- evidence:  the mode-weighted evidence of the parts the score relies on: a price counts 1
             unless it is an estimate (0); a latency or availability figure counts
             min(1, sqrt(sample_size / 100)).
- freshness: 1 for figures up to 30 days old, falling linearly to 0 at 365 days (the
             oldest of the winner's startup, price and availability figures).
- margin:    min(1, (best score - runner-up score) / 0.20); 1 when there is no runner-up.

label: high >= 0.70 > medium >= 0.40 > low.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date

from cerver.adapters.catalog import ProviderProfile
from cerver.gateway.models import ConfidenceLabel
from cerver.gateway.scoring import MODE_WEIGHTS

WEIGHTS = (0.40, 0.30, 0.30)  # evidence, freshness, margin
FULL_SAMPLE = 100
FRESH_DAYS = 30
STALE_DAYS = 365
DECISIVE_MARGIN = 0.20
HIGH, MEDIUM = 0.70, 0.40


@dataclass(frozen=True)
class Confidence:
    label: ConfidenceLabel
    value: float
    evidence: float
    freshness: float
    margin: float


def sample_evidence(sample_size: int) -> float:
    return min(1.0, math.sqrt(max(sample_size, 0) / FULL_SAMPLE))


def evidence(profile: ProviderProfile, mode: str) -> float:
    w = MODE_WEIGHTS[mode]
    price = 0.0 if profile.price.estimated else 1.0
    speed = sample_evidence(profile.startup.sample_size) if profile.startup.measured else 0.0
    avail = (
        0.0 if profile.availability.estimated else sample_evidence(profile.availability.sample_size)
    )
    return w.cost * price + w.speed * speed + w.reliability * avail


def freshness(as_of: date, today: date) -> float:
    age = (today - as_of).days
    if age <= FRESH_DAYS:
        return 1.0
    return max(0.0, 1.0 - (age - FRESH_DAYS) / (STALE_DAYS - FRESH_DAYS))


def margin(best: float, runner_up: float | None) -> float:
    if runner_up is None:
        return 1.0
    return min(1.0, max(0.0, best - runner_up) / DECISIVE_MARGIN)


def label_for(value: float) -> ConfidenceLabel:
    if value >= HIGH:
        return "high"
    if value >= MEDIUM:
        return "medium"
    return "low"


def confidence(
    profile: ProviderProfile,
    mode: str,
    best_score: float,
    runner_up_score: float | None,
    today: date,
) -> Confidence:
    e = evidence(profile, mode)
    f = freshness(profile.oldest_figure(), today)
    m = margin(best_score, runner_up_score)
    we, wf, wm = WEIGHTS
    value = round(we * e + wf * f + wm * m, 4)
    return Confidence(label_for(value), value, round(e, 4), round(f, 4), round(m, 4))
