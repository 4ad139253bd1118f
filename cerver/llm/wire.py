"""The HTTP contract of ``POST /v2/sessions/:id/run-llm`` and ``PUT /v2/account/limits``.
Request models forbid unknown fields, so a typo is a 422 naming the field."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from cerver.models import Strict

LLM_HARNESSES = ("openai", "anthropic", "openai-compatible")
DEFAULT_MAX_STEPS = 8


class LlmPolicy(Strict):
    mode: Literal["cheapest", "balanced", "best"] = "balanced"
    allowed_models: list[str] | None = None
    cascade: bool = False


class RunLlmRequest(Strict):
    model: str | None = Field(default=None, min_length=1, max_length=100)
    input: str = Field(min_length=1)
    harness: str | None = None
    system: str | None = None
    max_output_tokens: int | None = Field(default=None, gt=0, le=1_000_000)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    stream: bool = False
    tools: list[Literal["run"]] = Field(default_factory=list)
    max_steps: int = Field(default=DEFAULT_MAX_STEPS, ge=1, le=64)
    fallbacks: list[str] = Field(default_factory=list, max_length=8)
    policy: LlmPolicy | None = None

    @field_validator("harness")
    @classmethod
    def _harness(cls, value: str | None) -> str | None:
        if value is not None and value not in LLM_HARNESSES:
            raise ValueError(f"unknown harness {value!r}; valid: {', '.join(LLM_HARNESSES)}")
        return value


class TokenUsage(BaseModel):
    input_tokens: int
    output_tokens: int


class RunLlmResponse(BaseModel):
    session_id: str
    model: str
    harness: str
    output: str
    usage: TokenUsage
    cost_usd: float
    latency_ms: float
    finish_reason: str
    seq: int
    steps: list[dict[str, Any]] | None = None
    routing: dict[str, Any] | None = None
    attempts: list[dict[str, Any]] | None = None
    cost_estimated: bool | None = None


class AccountLimits(Strict):
    llm_budget_usd: float | None = Field(default=None, ge=0.0)


class AccountLimitsView(BaseModel):
    account_id: str
    llm_budget_usd: float | None
    llm_budget_source: Literal["account", "deployment", "none"]
    month: str
    llm_spent_usd: float
    llm_reserved_usd: float


class SessionLimits(Strict):
    llm_budget_usd: float | None = Field(default=None, ge=0.0)


class SessionLimitsView(BaseModel):
    """A session's own LLM budget (over its life; None: only the account's applies) and
    what its turns spent and hold reserved."""

    session_id: str
    llm_budget_usd: float | None
    llm_spent_usd: float
    llm_reserved_usd: float
