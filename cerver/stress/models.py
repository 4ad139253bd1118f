"""Wire models of ``POST /gateway/stress-tests`` and ``GET /gateway/stress-tests/{id}``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cerver.gateway.models import Requirements

MAX_SIMULATE_SAMPLES = 100_000
MAX_CANARY_SAMPLES = 50
DEFAULT_SAMPLE_SIZE = 100
SAMPLE_LIMITS: dict[str, int] = {"simulate": MAX_SIMULATE_SAMPLES, "canary": MAX_CANARY_SAMPLES}

StressMode = Literal["simulate", "canary"]
JobStatus = Literal["running", "completed", "failed"]


class StressRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    task: str | None = None
    kind: str = "preview_launch"
    workload: str | None = None
    requirements: Requirements = Field(default_factory=Requirements)
    providers: list[str] | None = None
    sample_size: int = Field(default=DEFAULT_SAMPLE_SIZE, gt=0)
    mode: StressMode = "simulate"
    run_async: bool = Field(default=False, alias="async")
    seed: int | None = None

    @model_validator(mode="after")
    def _sample_limit(self) -> StressRequest:
        limit = SAMPLE_LIMITS[self.mode]
        if self.sample_size > limit:
            raise ValueError(
                f"sample_size must be <= {limit} for mode {self.mode!r} (got {self.sample_size})"
            )
        return self


class ProviderReport(BaseModel):
    provider: str
    samples: int
    successes: int
    success_rate: float
    trimmed_each_side: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    mean_ms: float | None
    cost_per_run_usd: float
    score: float
    errors: list[str] = Field(default_factory=list)


class StressRecommendation(BaseModel):
    provider: str
    score: float
    reason: str


class StressResult(BaseModel):
    """One shape for a synchronous answer, a running job and a finished job."""

    id: str
    status: JobStatus
    progress: float = 0.0
    mode: StressMode
    kind: str
    task: str | None = None
    workload: str | None = None
    sample_size: int
    providers: list[str]
    poll_url: str | None = None
    results: dict[str, ProviderReport] = Field(default_factory=dict)
    ranking: list[str] = Field(default_factory=list)
    recommendation: StressRecommendation | None = None
    excluded: dict[str, str] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)
    error: dict[str, object] | None = None
    created_at: float
    finished_at: float | None = None
