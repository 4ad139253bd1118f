"""Wire models: the HTTP contract of the session API, shared by every layer.

Request models forbid unknown fields, so a typo is a 422 that names the field instead of a
silently ignored option.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cerver.adapters.base import EgressDenial, Language, Resources, check_env
from cerver.adapters.egress_allow import NetworkChoice
from cerver.gateway.models import Policy, RepoInfo, Requirements

HARNESSES = ("openai", "anthropic", "openai-compatible", "none")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ComputeChoice(Strict):
    """`{provider}` for a fresh provision or `{compute_id}` for an existing compute."""

    provider: str | None = None
    compute_id: str | None = None
    runtime: Language | None = None
    # true: the internet (not this node or its networks); {"allow": [names]}: only those
    # names, through the egress proxy (docs/security.md).
    network: NetworkChoice = False
    env: dict[str, str] = Field(default_factory=dict)
    resources: Resources = Field(default_factory=Resources)
    options: dict[str, Any] = Field(default_factory=dict)
    # Deprecated: the old name of CreateSession.fallback (docs/sessions.md, "Fallback").
    # Still accepted on create, where it means exactly the top-level flag.
    fallback: bool = False

    _env = field_validator("env")(check_env)

    @model_validator(mode="after")
    def _one_of(self) -> ComputeChoice:
        if (self.provider is None) == (self.compute_id is None):
            raise ValueError("give exactly one of compute.provider or compute.compute_id")
        return self


class CreateSession(Strict):
    """Short form (`compute`, `harness`, `session_name`) or the long, policy-based form
    (`task`, `workload`, `repo`, `requirements`, `policy`); both on one endpoint."""

    session_name: str | None = Field(default=None, max_length=200)
    compute: ComputeChoice | None = None
    harness: str | None = None
    runtime: Language | None = None
    # Short form: if the compute asked for cannot be had (provisioning fails, or a relay
    # host is offline), go on in the recommendation's order (routing.attempts says what was
    # tried). The one failover flag of a create; `compute.fallback` is its old name.
    fallback: bool = False
    # Long form: routed through /gateway/recommend, validated here by its own models so a
    # bad nested field is a 422 that names it (body.policy.mode, ...).
    task: str | None = None
    workload: str | None = None
    repo: RepoInfo | None = None
    requirements: Requirements | None = None
    policy: Policy | None = None
    # issue 13 (llmmodels): the session's own LLM budget over its life (docs/llm.md);
    # either form. Also PUT /v2/sessions/:id/limits.
    llm_budget_usd: float | None = Field(default=None, ge=0.0)

    @field_validator("harness")
    @classmethod
    def _harness(cls, value: str | None) -> str | None:
        if value is not None and value not in HARNESSES:
            raise ValueError(f"unknown harness {value!r}; valid: {', '.join(HARNESSES)}")
        return value

    @property
    def is_long_form(self) -> bool:
        return self.requirements is not None or self.policy is not None

    def compute_given(self) -> bool:
        return "compute" in self.model_fields_set

    @property
    def wants_fallback(self) -> bool:
        """The top-level ``fallback``, or its old name ``compute.fallback``."""
        return self.fallback or (self.compute is not None and self.compute.fallback)


class SwapCompute(Strict):
    compute: ComputeChoice | None

    @model_validator(mode="after")
    def _no_fallback(self) -> SwapCompute:
        # It used to be accepted here and ignored; a flag that does nothing is refused.
        if self.compute is not None and self.compute.fallback:
            raise ValueError(
                "compute.fallback applies to POST /v2/sessions only (the old name of its "
                "top-level fallback); a swap moves to exactly the compute named: drop it"
            )
        return self


class RunRequest(Strict):
    code: str = Field(min_length=1)
    language: Language | None = None
    timeout: float | None = Field(default=None, gt=0)
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None
    stream: bool = False
    # When the session's compute is offline (a relay host), move the session to the
    # recommendation and run there (the transcript says so) instead of answering 409.
    fallback: bool = False

    _env = field_validator("env")(check_env)


class Routing(BaseModel):
    recommended_provider: str | None
    confidence: str
    primary_reason: str
    secondary_reasons: list[str] = Field(default_factory=list)
    fallback_order: list[str] = Field(default_factory=list)
    canary_run: bool = False
    confidence_value: float | None = None
    mode: str | None = None
    attempts: list[dict[str, Any]] = Field(default_factory=list)


class SessionMetrics(BaseModel):
    provision_time_ms: float | None
    time_to_first_exec_ms: float | None
    last_exec_latency_ms: float | None
    average_exec_latency_ms: float | None
    average_stream_open_latency_ms: float | None
    total_exec_count: int
    total_stream_count: int
    interaction_count: int
    session_length_ms: float
    cost_estimate_usd: float
    uptime_percent: float
    predicted_startup_ms: float | None
    engagement_score: float
    engagement_label: Literal["idle", "warming", "engaged", "deep"]
    compute_seconds: float = 0.0
    egress_denied_count: int = 0  # connections refused by the egress allowlist
    # Model turns (cerver/llm/metrics.py); cost_estimate_usd includes llm_cost_usd.
    llm_turn_count: int = 0
    llm_input_tokens: int = 0
    llm_output_tokens: int = 0
    llm_cost_usd: float = 0.0
    llm_cost_estimated: bool = False
    llm_by_model: dict[str, dict[str, Any]] = Field(default_factory=dict)
    premium_baseline_usd: float = 0.0
    savings_usd: float = 0.0


class SessionView(BaseModel):
    session_id: str
    session_name: str | None
    status: str
    provider: str | None
    compute_id: str | None
    sandbox_id: str | None
    isolation: str | None = None
    harness: str | None
    runtime: str
    created_at: float
    closed_at: float | None
    metrics: SessionMetrics
    routing: Routing | None
    transcript_length: int | None = None
    transcript: list[dict[str, Any]] | None = None
    next_since: int | None = None
    # Paging by bytes: entries after next_since were left out of this answer (ask again
    # with ?since=next_since), and the bytes the session's transcript holds in all.
    transcript_more: bool | None = None
    transcript_bytes: int | None = None


class RunResponse(BaseModel):
    session_id: str
    provider: str
    compute_id: str
    stdout: str
    stderr: str
    exit_code: int
    duration_ms: float
    latency_ms: float
    timed_out: bool
    truncated: bool
    error: str | None = None
    interpreter_restarted: bool = False
    egress_denied: list[EgressDenial] = Field(default_factory=list)
    seq: int
