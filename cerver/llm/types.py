"""The neutral vocabulary of a model turn, shared by every harness: messages, tools, usage,
completions. Harnesses translate these to and from their wire formats; nothing above a
harness sees a vendor type."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class ToolCall(BaseModel):
    id: str
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class Message(BaseModel):
    """One conversation message. ``assistant`` may carry tool calls; ``tool`` answers one."""

    role: Literal["user", "assistant", "tool"]
    text: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    tool_call_id: str | None = None
    is_error: bool = False


class ToolSpec(BaseModel):
    name: str
    description: str
    parameters: dict[str, Any]


class Call(BaseModel):
    """One upstream request."""

    model: str
    system: str | None = None
    messages: list[Message]
    tools: list[ToolSpec] = Field(default_factory=list)
    max_output_tokens: int
    temperature: float | None = None


class Usage(BaseModel):
    """Token counts of one call. ``input_tokens`` counts every input token, cached ones
    included (cache reads and writes are subsets priced at their own rates);
    ``output_tokens`` includes ``reasoning_tokens``."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            **{name: getattr(self, name) + getattr(other, name) for name in Usage.model_fields}
        )


FinishReason = Literal["stop", "length", "tool_calls", "refusal", "content_filter", "other"]


class Completion(BaseModel):
    """What one call produced. ``usage`` is None when the upstream did not report it."""

    text: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    usage: Usage | None = None
    finish_reason: FinishReason = "stop"
    model: str | None = None


class TextDelta(BaseModel):
    text: str
