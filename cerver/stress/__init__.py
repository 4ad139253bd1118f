"""Stress tests: simulate from profiles or run live canaries as Ray tasks, aggregate with
numpy, score after the sandbox leaderboards' method."""

from __future__ import annotations

from cerver.stress.kinds import KINDS, Kind, get_kind
from cerver.stress.models import (
    MAX_CANARY_SAMPLES,
    MAX_SIMULATE_SAMPLES,
    ProviderReport,
    StressRecommendation,
    StressRequest,
    StressResult,
)

__all__ = [
    "KINDS",
    "MAX_CANARY_SAMPLES",
    "MAX_SIMULATE_SAMPLES",
    "Kind",
    "ProviderReport",
    "StressRecommendation",
    "StressRequest",
    "StressResult",
    "get_kind",
]
