"""Wire models of ``POST /gateway/recommend`` (and the long-form ``POST /v2/sessions``).

Requests accept the seed documentation's bodies exactly as written; unknown fields are
rejected (422 naming the field).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

PolicyMode = Literal["cheapest", "fastest", "balanced", "reliable"]
POLICY_MODES: tuple[str, ...] = ("cheapest", "fastest", "balanced", "reliable")
ConfidenceLabel = Literal["high", "medium", "low"]


class RepoInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    framework: str | None = None
    languages: list[str] = Field(default_factory=list)
    signals: list[str] = Field(default_factory=list)


class Requirements(BaseModel):
    """Hard requirements: a provider that cannot meet one is excluded, with the reason."""

    model_config = ConfigDict(extra="forbid")

    runtime: str | None = None
    package_install: bool | None = None
    public_preview: bool | None = None
    persistence_level: Literal["low", "medium", "high"] | None = None
    timeout_minutes: float | None = Field(default=None, gt=0)
    gpu: bool | None = None
    network_control: bool | None = None


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: PolicyMode = "balanced"
    allowed_providers: list[str] | None = None
    blocked_providers: list[str] = Field(default_factory=list)
    max_startup_ms: float | None = Field(default=None, gt=0)
    max_price_per_hour: float | None = Field(default=None, ge=0)


class RecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: str | None = None
    workload: str | None = None
    repo: RepoInfo | None = None
    requirements: Requirements = Field(default_factory=Requirements)
    policy: Policy = Field(default_factory=Policy)
    session_name: str | None = None


class ProviderScore(BaseModel):
    """One candidate's score under the policy, with the parts it is made of (each 0..1)."""

    score: float
    cost: float
    speed: float
    reliability: float
    price_per_hour_usd: float
    predicted_startup_ms: float
    uptime_percent: float
    sample_size: int
    estimated: bool


class Routing(BaseModel):
    """The seed's ``routing`` object, as stored on a session."""

    recommended_provider: str
    confidence: ConfidenceLabel
    primary_reason: str
    secondary_reasons: list[str]
    fallback_order: list[str]
    canary_run: bool = False


class Recommendation(Routing):
    confidence_value: float
    mode: PolicyMode
    predicted_startup_ms: float
    price_per_hour_usd: float
    scores: dict[str, ProviderScore]
    excluded: dict[str, str]
    executable: list[str] | None = None

    @property
    def routing(self) -> Routing:
        return Routing(**{name: getattr(self, name) for name in Routing.model_fields})
