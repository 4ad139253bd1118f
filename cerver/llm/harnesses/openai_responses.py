"""The `openai` harness: OpenAI's Responses API (``POST /v1/responses``) through the
official ``openai`` SDK. Conversation items: ``{"role", "content"}`` messages,
``function_call`` items for the model's tool calls and ``function_call_output`` items for
their results. ``store=False``: the session transcript is the record, not OpenAI's."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from cerver.llm.aio import shielded
from cerver.llm.harnesses.base import (
    Endpoint,
    Harness,
    UpstreamError,
    parse_arguments,
    post_json,
    translate_sdk_error,
)
from cerver.llm.types import Call, Completion, Message, TextDelta, ToolCall, Usage


class OpenAIResponses(Harness):
    name = "openai"

    def __init__(self, endpoint: Endpoint) -> None:
        super().__init__(endpoint)
        import openai

        self._sdk = openai
        self.client = openai.AsyncOpenAI(
            api_key=endpoint.api_key,
            base_url=endpoint.base_url,
            timeout=endpoint.timeout_s,
            max_retries=0,  # Cerver owns retries
        )

    def _params(self, call: Call) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": call.model,
            "input": [item for m in call.messages for item in _items(m)],
            "max_output_tokens": call.max_output_tokens,
            "store": False,
        }
        if call.system:
            params["instructions"] = call.system
        if call.temperature is not None:
            params["temperature"] = call.temperature
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
        try:
            response = await post_json(self.client, "/responses", self._params(call))
        except self._sdk.OpenAIError as exc:
            raise translate_sdk_error(exc, self._sdk) from exc
        return _completion(response)

    async def stream(self, call: Call) -> AsyncIterator[TextDelta | Completion]:
        try:
            events = await self.client.responses.create(**self._params(call), stream=True)
        except self._sdk.OpenAIError as exc:
            raise translate_sdk_error(exc, self._sdk) from exc
        final: Completion | None = None
        text: list[str] = []
        try:
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
        except self._sdk.OpenAIError as exc:
            raise translate_sdk_error(exc, self._sdk) from exc
        finally:
            await shielded(events.close())
        yield final or Completion(text="".join(text), usage=None, finish_reason="other")

    async def aclose(self) -> None:
        await self.client.close()


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
