"""The recommender: hard filters, policy scoring, reasons, fallback order (pure, no I/O)."""

from __future__ import annotations

from cerver.gateway.models import (
    POLICY_MODES,
    Policy,
    ProviderScore,
    Recommendation,
    RecommendRequest,
    RepoInfo,
    Requirements,
    Routing,
)
from cerver.gateway.recommend import NOT_EXECUTABLE, recommend

__all__ = [
    "NOT_EXECUTABLE",
    "POLICY_MODES",
    "Policy",
    "ProviderScore",
    "RecommendRequest",
    "Recommendation",
    "RepoInfo",
    "Requirements",
    "Routing",
    "recommend",
]
