"""The `openai-compatible` harness: Chat Completions (``POST /v1/chat/completions``) at a
base URL, through the official ``openai`` SDK: vLLM, Ollama, Ray Serve LLM and the many
servers that speak this dialect. Streams ask for usage (``stream_options.include_usage``);
a server that does not report it gets the turn marked as estimated by the caller."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from cerver.llm.harnesses.base import SdkHarness, common_params, parse_arguments, post_json
from cerver.llm.types import Call, Completion, Message, TextDelta, ToolCall, Usage

_FINISH = {"stop": "stop", "length": "length", "tool_calls": "tool_calls"}


class OpenAIChat(SdkHarness):
    name = "openai-compatible"
    sdk_module, client_class, error_class = "openai", "AsyncOpenAI", "OpenAIError"

    def _params(self, call: Call) -> dict[str, Any]:
        messages: list[dict[str, Any]] = []
        if call.system:
            messages.append({"role": "system", "content": call.system})
        messages.extend(_message(m) for m in call.messages)
        params = common_params(call, max_tokens="max_tokens")
        params["messages"] = messages
        if call.tools:
            params["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.parameters,
                    },
                }
                for t in call.tools
            ]
        return params

    async def complete(self, call: Call) -> Completion:
        response = await self._request(
            post_json, self.client, "/chat/completions", self._params(call)
        )
        choice = response.choices[0]
        calls = [
            ToolCall(id=c.id, name=c.function.name, arguments=parse_arguments(c.function.arguments))
            for c in choice.message.tool_calls or []
        ]
        return Completion(
            text=choice.message.content or "",
            tool_calls=calls,
            usage=_usage(response.usage),
            finish_reason=_FINISH.get(choice.finish_reason or "", "other"),  # type: ignore[arg-type]
            model=response.model,
        )

    async def stream(self, call: Call) -> AsyncIterator[TextDelta | Completion]:
        raw = await self._request(
            self.client.chat.completions.create,
            **self._params(call),
            stream=True,
            stream_options={"include_usage": True},
        )
        texts: list[str] = []
        tools: dict[int, dict[str, Any]] = {}
        finish: str | None = None
        usage: Usage | None = None
        model: str | None = None
        async with aclosing(self._events(raw)) as chunks:
            async for chunk in chunks:
                model = chunk.model or model
                if chunk.usage is not None:
                    usage = _usage(chunk.usage)
                for choice in chunk.choices:
                    finish = choice.finish_reason or finish
                    delta = choice.delta
                    if delta.content:
                        texts.append(delta.content)
                        yield TextDelta(text=delta.content)
                    for part in delta.tool_calls or []:
                        slot = tools.setdefault(part.index, {"id": "", "name": "", "args": []})
                        if part.id:
                            slot["id"] = part.id
                        if part.function and part.function.name:
                            slot["name"] = part.function.name
                        if part.function and part.function.arguments:
                            slot["args"].append(part.function.arguments)
        yield Completion(
            text="".join(texts),
            tool_calls=[
                ToolCall(id=t["id"], name=t["name"], arguments=parse_arguments("".join(t["args"])))
                for _, t in sorted(tools.items())
            ],
            usage=usage,
            finish_reason=_FINISH.get(finish or "", "other"),  # type: ignore[arg-type]
            model=model,
        )


def _message(m: Message) -> dict[str, Any]:
    if m.role == "tool":
        return {"role": "tool", "tool_call_id": m.tool_call_id, "content": m.text}
    out: dict[str, Any] = {"role": m.role, "content": m.text}
    if m.tool_calls:
        out["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
            }
            for c in m.tool_calls
        ]
    return out


def _usage(usage: Any) -> Usage | None:
    if usage is None:
        return None
    cached = getattr(getattr(usage, "prompt_tokens_details", None), "cached_tokens", 0) or 0
    reasoning = (
        getattr(getattr(usage, "completion_tokens_details", None), "reasoning_tokens", 0) or 0
    )
    return Usage(
        input_tokens=usage.prompt_tokens,
        output_tokens=usage.completion_tokens,
        cache_read_tokens=cached,
        reasoning_tokens=reasoning,
    )
