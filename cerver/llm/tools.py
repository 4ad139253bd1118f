"""The tools a model may call in a turn. Today one: ``run``, which runs code in the
session's compute exactly like ``POST /v2/sessions/:id/run`` (the route hands the turn a
runner that goes through the same session router call), so the run is an ``exec`` entry
of the transcript like any other, between the turn's ``tool_call`` and ``tool_result``."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from cerver.llm.types import ToolSpec

RUN_TOOL = ToolSpec(
    name="run",
    description=(
        "Run code in this session's compute (a sandbox) and get its stdout, stderr and exit "
        "code. Files and (for python) variables persist between runs of the session."
    ),
    parameters={
        "type": "object",
        "properties": {
            "code": {"type": "string", "description": "the code or shell command to run"},
            "language": {
                "type": "string",
                "enum": ["shell", "python", "node"],
                "description": "defaults to the session's runtime",
            },
        },
        "required": ["code"],
    },
)

# What the model is shown of a run's output (the transcript's exec entry keeps it all).
OUTPUT_LIMIT = 8000


class ToolOutcome(BaseModel):
    output: str
    is_error: bool = False
    exit_code: int | None = None
    exec_seq: int | None = None


def outcome_of(result: dict[str, Any], exec_seq: int | None) -> ToolOutcome:
    stdout, stderr = str(result.get("stdout", "")), str(result.get("stderr", ""))
    exit_code = result.get("exit_code")
    parts = [f"exit_code: {exit_code}"]
    if result.get("timed_out"):
        parts.append("timed out")
    if stdout:
        parts.append("stdout:\n" + _clip(stdout))
    if stderr:
        parts.append("stderr:\n" + _clip(stderr))
    return ToolOutcome(
        output="\n".join(parts),
        is_error=exit_code != 0,
        exit_code=exit_code,
        exec_seq=exec_seq,
    )


def _clip(text: str) -> str:
    return text if len(text) <= OUTPUT_LIMIT else text[:OUTPUT_LIMIT] + "\n...[clipped]"
