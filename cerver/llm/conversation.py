"""The conversation a turn sends upstream, rebuilt from the session transcript, so a turn
sees every earlier turn of the session whichever model answered it.

Entries of a turn, in transcript order: ``user`` {text}, then per tool step ``tool_call``
{id, name, arguments} and ``tool_result`` {id, output, is_error} (with the session's own
``exec`` entry between them), and last ``assistant`` {text, model, ...}. An assistant entry
marked ``superseded`` (a cascade escalated past it) is not part of the conversation.

Earlier turns' tool steps are replayed as text inside the assistant message, not as
vendor tool blocks: a turn on another harness, or without tools, can then read them.

Context budget: a model sees at most its context window minus the output it may write;
when the history does not fit, the oldest exchanges are dropped, and the turn's assistant
entry says how many (``context.dropped_turns``).
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from cerver.llm.types import Message
from cerver.store import TranscriptEntry

CONVERSATION_TYPES = ("user", "assistant", "tool_call", "tool_result")
STEP_TEXT_LIMIT = 2000
# Bytes per token for fitting history in a window: a typical English BPE ratio.
BYTES_PER_TOKEN = 4


class Exchange(BaseModel):
    user: str
    assistant: str


def exchanges(entries: list[TranscriptEntry]) -> list[Exchange]:
    """Completed and partial exchanges, oldest first."""
    found: list[Exchange] = []
    user: str | None = None
    steps: list[str] = []
    for entry in entries:
        content = entry.content
        if entry.type == "user":
            if user is not None:  # a turn that never answered (failed upstream)
                found.append(Exchange(user=user, assistant=_with_steps("", steps)))
            user, steps = str(content.get("text", "")), []
        elif entry.type == "tool_call":
            arguments = _clip(json.dumps(content.get("arguments", {})))
            steps.append(f"[tool call {content.get('name')}: {arguments}]")
        elif entry.type == "tool_result":
            steps.append(f"[tool result: {_clip(str(content.get('output', '')))}]")
        elif entry.type == "assistant" and not content.get("superseded"):
            found.append(
                Exchange(
                    user=user or "", assistant=_with_steps(str(content.get("text", "")), steps)
                )
            )
            user, steps = None, []
    if user is not None:
        found.append(Exchange(user=user, assistant=_with_steps("", steps)))
    return found


def history(entries: list[TranscriptEntry], *, budget_tokens: int) -> tuple[list[Message], int]:
    """Messages of the earlier turns that fit in ``budget_tokens``; and how many
    exchanges were dropped to fit."""
    kept = exchanges(entries)
    dropped = 0
    while (
        kept
        and sum(estimate_tokens(e.user) + estimate_tokens(e.assistant) for e in kept)
        > budget_tokens
    ):
        kept.pop(0)
        dropped += 1
    messages: list[Message] = []
    for e in kept:
        messages.append(Message(role="user", text=e.user))
        if e.assistant:
            messages.append(Message(role="assistant", text=e.assistant))
    return messages, dropped


def estimate_tokens(text: str) -> int:
    return (len(text.encode()) + BYTES_PER_TOKEN - 1) // BYTES_PER_TOKEN


def upper_bound_tokens(messages: list[Message], system: str | None, tools: Any) -> int:
    """An upper bound of the input tokens of a call: BPE tokenizers never emit fewer than
    one byte per token, so bytes (plus a per-message allowance for the wire's framing)
    bound the count from above. Used to reserve budget."""
    size = len((system or "").encode()) + len(json.dumps(tools).encode()) + 16
    for m in messages:
        size += len(m.text.encode()) + 16
        size += sum(len(json.dumps(c.model_dump()).encode()) + 16 for c in m.tool_calls)
    return size


def _with_steps(text: str, steps: list[str]) -> str:
    return "\n".join([*steps, text]).strip() if steps else text


def _clip(text: str) -> str:
    return text if len(text) <= STEP_TEXT_LIMIT else text[:STEP_TEXT_LIMIT] + "...[clipped]"
