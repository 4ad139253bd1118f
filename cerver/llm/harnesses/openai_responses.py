"""The `openai` harness: OpenAI's Responses API (``POST /v1/responses``) through the
official ``openai`` SDK. Conversation items: ``{"role", "content"}`` messages,
``function_call`` items for the model's tool calls and ``function_call_output`` items for
their results. ``store=False``: the session transcript is the record, not OpenAI's."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from cerver.llm.harnesses.base import (
    SdkHarness,
    UpstreamError,
    common_params,
    parse_arguments,
    post_json,
)
from cerver.llm.types import Call, Completion, Message, TextDelta, ToolCall, Usage


class OpenAIResponses(SdkHarness):
    name = "openai"
    sdk_module, client_class, error_class = "openai", "AsyncOpenAI", "OpenAIError"

    def _params(self, call: Call) -> dict[str, Any]:
        params = common_params(call, max_tokens="max_output_tokens")
        params["input"] = [item for m in call.messages for item in _items(m)]
        params["store"] = False
        if call.system:
            params["instructions"] = call.system
        if call.tools:
            params["tools"] = [
                {
                    "type": "function",
                    "name": t.name,
                    "description": t.description,
                    "parameters": t.parameters,
                    "strict": False,
                }
                for t in call.tools
            ]
        return params

    async def complete(self, call: Call) -> Completion:
        return _completion(
            await self._request(post_json, self.client, "/responses", self._params(call))
        )

    async def stream(self, call: Call) -> AsyncIterator[TextDelta | Completion]:
        raw = await self._request(self.client.responses.create, **self._params(call), stream=True)
        final: Completion | None = None
        text: list[str] = []
        async with aclosing(self._events(raw)) as events:
            async for event in events:
                if event.type == "response.output_text.delta":
                    text.append(event.delta)
                    yield TextDelta(text=event.delta)
                elif event.type in ("response.completed", "response.incomplete"):
                    final = _completion(event.response)
                elif event.type in ("response.failed", "error"):
                    raise UpstreamError(
                        "server_error",
                        f"the upstream stream failed: {_event_error(event)}",
                        retry_after_s=None,
                    )
        yield final or Completion(text="".join(text), usage=None, finish_reason="other")


def _items(message: Message) -> list[dict[str, Any]]:
    if message.role == "tool":
        return [
            {
                "type": "function_call_output",
                "call_id": message.tool_call_id,
                "output": message.text,
            }
        ]
    items: list[dict[str, Any]] = []
    if message.text or not message.tool_calls:
        items.append({"role": message.role, "content": message.text})
    items.extend(
        {
            "type": "function_call",
            "call_id": call.id,
            "name": call.name,
            "arguments": json.dumps(call.arguments),
        }
        for call in message.tool_calls
    )
    return items


def _completion(response: Any) -> Completion:
    texts: list[str] = []
    calls: list[ToolCall] = []
    refused = False
    for item in response.output or []:
        if item.type == "message":
            for part in item.content or []:
                if part.type == "output_text":
                    texts.append(part.text)
                elif part.type == "refusal":
                    refused = True
                    texts.append(part.refusal)
        elif item.type == "function_call":
            calls.append(
                ToolCall(id=item.call_id, name=item.name, arguments=parse_arguments(item.arguments))
            )
    incomplete = getattr(response, "incomplete_details", None)
    if refused:
        finish = "refusal"
    elif calls:
        finish = "tool_calls"
    elif response.status == "incomplete":
        reason = getattr(incomplete, "reason", None)
        finish = "length" if reason == "max_output_tokens" else "content_filter"
    else:
        finish = "stop"
    return Completion(
        text="".join(texts),
        tool_calls=calls,
        usage=_usage(response.usage),
        finish_reason=finish,  # type: ignore[arg-type]
        model=response.model,
    )


def _usage(usage: Any) -> Usage | None:
    if usage is None:
        return None
    cached = getattr(getattr(usage, "input_tokens_details", None), "cached_tokens", 0) or 0
    reasoning = getattr(getattr(usage, "output_tokens_details", None), "reasoning_tokens", 0) or 0
    return Usage(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_read_tokens=cached,
        reasoning_tokens=reasoning,
    )


def _event_error(event: Any) -> str:
    error = getattr(getattr(event, "response", None), "error", None) or event
    return str(getattr(error, "message", error))
