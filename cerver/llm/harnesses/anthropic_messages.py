"""The `anthropic` harness: Anthropic's Messages API (``POST /v1/messages``) through the
official ``anthropic`` SDK. Tool calls are ``tool_use`` content blocks of the assistant;
their results are ``tool_result`` blocks of the next user message. Anthropic reports
``input_tokens`` without the cached part: here the cache reads and writes are added back,
so ``Usage.input_tokens`` means the same thing for every harness."""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from cerver.llm.harnesses.base import (
    Endpoint,
    SdkHarness,
    common_params,
    parse_arguments,
    plain,
    post_json,
)
from cerver.llm.types import Call, Completion, Message, TextDelta, ToolCall, Usage

_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "refusal",
    "pause_turn": "other",
}


class AnthropicMessages(SdkHarness):
    name = "anthropic"
    sdk_module, client_class, error_class = "anthropic", "AsyncAnthropic", "AnthropicError"

    def __init__(self, endpoint: Endpoint) -> None:
        super().__init__(endpoint)
        # The catalog keeps the docs' model names on purpose, deprecated or not.
        warnings.filterwarnings(
            "ignore", message=r"The model .* is deprecated", category=DeprecationWarning
        )

    def _params(self, call: Call) -> dict[str, Any]:
        params = common_params(call, max_tokens="max_tokens")
        params["messages"] = _messages(call.messages)
        if call.system:
            params["system"] = call.system
        if call.tools:
            params["tools"] = [
                {"name": t.name, "description": t.description, "input_schema": t.parameters}
                for t in call.tools
            ]
        return params

    async def complete(self, call: Call) -> Completion:
        message = await self._request(post_json, self.client, "/v1/messages", self._params(call))
        texts = [b.text for b in message.content if b.type == "text"]
        calls = [
            ToolCall(id=b.id, name=b.name, arguments=plain(b.input) or {})
            for b in message.content
            if b.type == "tool_use"
        ]
        return Completion(
            text="".join(texts),
            tool_calls=calls,
            usage=_usage(message.usage, message.usage.output_tokens),
            finish_reason=_FINISH.get(message.stop_reason or "", "other"),  # type: ignore[arg-type]
            model=message.model,
        )

    async def stream(self, call: Call) -> AsyncIterator[TextDelta | Completion]:
        raw = await self._request(self.client.messages.create, **self._params(call), stream=True)
        texts: list[str] = []
        tools: dict[int, dict[str, Any]] = {}
        start_usage: Any = None
        output_tokens: int | None = None
        stop_reason: str | None = None
        model: str | None = None
        async with aclosing(self._events(raw)) as events:
            async for event in events:
                if event.type == "message_start":
                    start_usage, model = event.message.usage, event.message.model
                elif event.type == "content_block_start" and event.content_block.type == "tool_use":
                    block = event.content_block
                    tools[event.index] = {"id": block.id, "name": block.name, "json": []}
                elif event.type == "content_block_delta":
                    if event.delta.type == "text_delta":
                        texts.append(event.delta.text)
                        yield TextDelta(text=event.delta.text)
                    elif event.delta.type == "input_json_delta" and event.index in tools:
                        tools[event.index]["json"].append(event.delta.partial_json)
                elif event.type == "message_delta":
                    stop_reason = event.delta.stop_reason
                    output_tokens = event.usage.output_tokens
        calls = [
            ToolCall(id=t["id"], name=t["name"], arguments=parse_arguments("".join(t["json"])))
            for _, t in sorted(tools.items())
        ]
        yield Completion(
            text="".join(texts),
            tool_calls=calls,
            usage=_usage(start_usage, output_tokens) if start_usage is not None else None,
            finish_reason=_FINISH.get(stop_reason or "", "other"),  # type: ignore[arg-type]
            model=model,
        )


def _messages(messages: list[Message]) -> list[dict[str, Any]]:
    """Neutral messages to Anthropic's alternating user/assistant list: tool results become
    ``tool_result`` blocks of a user message; consecutive same-role messages merge."""
    out: list[dict[str, Any]] = []
    for m in messages:
        blocks: list[dict[str, Any]]
        if m.role == "tool":
            role = "user"
            blocks = [
                {
                    "type": "tool_result",
                    "tool_use_id": m.tool_call_id,
                    "content": m.text,
                    "is_error": m.is_error,
                }
            ]
        else:
            role = m.role
            blocks = [{"type": "text", "text": m.text}] if m.text else []
            blocks += [
                {"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments}
                for c in m.tool_calls
            ]
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    return out


def _usage(usage: Any, output_tokens: int | None) -> Usage:
    read = getattr(usage, "cache_read_input_tokens", 0) or 0
    write = getattr(usage, "cache_creation_input_tokens", 0) or 0
    return Usage(
        input_tokens=(usage.input_tokens or 0) + read + write,
        output_tokens=output_tokens if output_tokens is not None else usage.output_tokens or 0,
        cache_read_tokens=read,
        cache_write_tokens=write,
    )
