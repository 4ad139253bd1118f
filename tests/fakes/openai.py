"""A fake OpenAI API over real HTTP: ``POST /v1/responses`` (the Responses API) and
``POST /v1/chat/completions`` (Chat Completions, what openai-compatible servers speak),
JSON or streamed in the event shapes the official SDK parses, with function calls, usage
(cached and reasoning tokens), scripted errors and delays. Scripting and the received log:
tests/fakes/_llm.py. Point the SDK at ``http://127.0.0.1:PORT/v1``.

    python -m tests.fakes.openai --port 8801
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from tests.fakes._llm import Script, default_text, main, make_app, new_id, split_chunks, sse, words


def error_body(status: int, message: str) -> dict[str, Any]:
    kind = {429: "rate_limit_exceeded", 400: "invalid_request_error"}.get(status, "server_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": kind}}


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return " ".join(str(p.get("text", "")) for p in content or [] if isinstance(p, dict))


# --- Responses API ----------------------------------------------------------------------
def _responses_input_text(body: dict[str, Any]) -> tuple[int, str]:
    total, last_user = words(str(body.get("instructions") or "")), ""
    items = body.get("input", [])
    if isinstance(items, str):
        return total + words(items), items
    for item in items:
        if item.get("type") == "function_call":
            total += words(item.get("arguments", ""))
        elif item.get("type") == "function_call_output":
            total += words(str(item.get("output", "")))
        else:
            text = _content_text(item.get("content"))
            total += words(text)
            if item.get("role") == "user":
                last_user = text
    return total, last_user


def _response(
    body: dict[str, Any], item: dict[str, Any], status: str = "completed"
) -> dict[str, Any]:
    model = str(body["model"])
    input_words, last_user = _responses_input_text(body)
    output: list[dict[str, Any]] = []
    incomplete = None
    if item.get("tool_call"):
        call = item["tool_call"]
        arguments = json.dumps(call.get("arguments", {}))
        output.append(
            {
                "type": "function_call",
                "id": new_id("fc"),
                "call_id": new_id("call"),
                "name": call["name"],
                "arguments": arguments,
                "status": "completed",
            }
        )
        out_words = words(arguments)
    else:
        text = item.get("text", default_text(model, last_user))
        part = (
            {"type": "refusal", "refusal": text}
            if item.get("finish") == "refusal"
            else {"type": "output_text", "text": text, "annotations": []}
        )
        output.append(
            {
                "type": "message",
                "id": new_id("msg"),
                "status": "completed",
                "role": "assistant",
                "content": [part],
            }
        )
        out_words = words(text)
        if item.get("finish") == "length":
            status, incomplete = "incomplete", {"reason": "max_output_tokens"}
    reasoning = int(item.get("reasoning", 0))
    return {
        "id": new_id("resp"),
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "error": None,
        "incomplete_details": incomplete,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": model,
        "output": output,
        "parallel_tool_calls": True,
        "temperature": body.get("temperature", 1.0),
        "tool_choice": "auto",
        "tools": body.get("tools", []),
        "top_p": 1.0,
        "store": body.get("store", True),
        "text": {"format": {"type": "text"}},
        "reasoning": {"effort": None, "summary": None},
        "metadata": {},
        "usage": {
            "input_tokens": input_words,
            "input_tokens_details": {"cached_tokens": int(item.get("cached", 0))},
            "output_tokens": out_words + reasoning,
            "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": input_words + out_words + reasoning,
        },
    }


def responses(
    _script: Script, _request: Request, body: dict[str, Any], item: dict[str, Any]
) -> Response:
    final = _response(body, item)
    if not body.get("stream"):
        return JSONResponse(final)
    return StreamingResponse(_response_frames(final, item), media_type="text/event-stream")


async def _response_frames(final: dict[str, Any], item: dict[str, Any]) -> AsyncIterator[bytes]:
    delay = float(item.get("chunk_delay_s", 0.0))
    seq = iter(range(1_000_000))

    def frame(kind: str, **data: Any) -> bytes:
        return sse(kind, {"type": kind, "sequence_number": next(seq), **data})

    opening = {
        **final,
        "status": "in_progress",
        "output": [],
        "usage": None,
        "incomplete_details": None,
    }
    yield frame("response.created", response=opening)
    yield frame("response.in_progress", response=opening)
    for index, out in enumerate(final["output"]):
        if out["type"] == "function_call":
            yield frame(
                "response.output_item.added",
                output_index=index,
                item={**out, "arguments": "", "status": "in_progress"},
            )
            yield frame(
                "response.function_call_arguments.delta",
                item_id=out["id"],
                output_index=index,
                delta=out["arguments"],
            )
            yield frame(
                "response.function_call_arguments.done",
                item_id=out["id"],
                output_index=index,
                arguments=out["arguments"],
                name=out["name"],
            )
            yield frame("response.output_item.done", output_index=index, item=out)
            continue
        part = out["content"][0]
        yield frame(
            "response.output_item.added",
            output_index=index,
            item={**out, "status": "in_progress", "content": []},
        )
        empty = {**part, "text": ""} if part["type"] == "output_text" else {**part, "refusal": ""}
        yield frame(
            "response.content_part.added",
            item_id=out["id"],
            output_index=index,
            content_index=0,
            part=empty,
        )
        if part["type"] == "output_text":
            for piece in split_chunks(part["text"], int(item.get("chunks", 3))):
                if delay:
                    await asyncio.sleep(delay)
                yield frame(
                    "response.output_text.delta",
                    item_id=out["id"],
                    output_index=index,
                    content_index=0,
                    delta=piece,
                    logprobs=[],
                )
            yield frame(
                "response.output_text.done",
                item_id=out["id"],
                output_index=index,
                content_index=0,
                text=part["text"],
                logprobs=[],
            )
        yield frame(
            "response.content_part.done",
            item_id=out["id"],
            output_index=index,
            content_index=0,
            part=part,
        )
        yield frame("response.output_item.done", output_index=index, item=out)
    ending = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
    yield frame(ending, response=final)


# --- Chat Completions -------------------------------------------------------------------
def _chat_answer(body: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
    model = str(body["model"])
    messages = body.get("messages", [])
    input_words = sum(words(_content_text(m.get("content"))) for m in messages)
    last_user = next(
        (_content_text(m.get("content")) for m in reversed(messages) if m["role"] == "user"), ""
    )
    message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
    if item.get("tool_call"):
        call = item["tool_call"]
        arguments = json.dumps(call.get("arguments", {}))
        message["tool_calls"] = [
            {
                "id": new_id("call"),
                "type": "function",
                "function": {"name": call["name"], "arguments": arguments},
            }
        ]
        finish, out_words = "tool_calls", words(arguments)
    else:
        message["content"] = item.get("text", default_text(model, last_user))
        finish = "length" if item.get("finish") == "length" else "stop"
        out_words = words(message["content"])
    return {
        "id": new_id("chatcmpl"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": {
            "prompt_tokens": input_words,
            "completion_tokens": out_words,
            "total_tokens": input_words + out_words,
            "prompt_tokens_details": {"cached_tokens": int(item.get("cached", 0))},
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
    }


def chat(
    _script: Script, _request: Request, body: dict[str, Any], item: dict[str, Any]
) -> Response:
    answer = _chat_answer(body, item)
    if not body.get("stream"):
        return JSONResponse(answer)
    with_usage = bool((body.get("stream_options") or {}).get("include_usage")) and not item.get(
        "no_usage"
    )
    return StreamingResponse(_chat_frames(answer, item, with_usage), media_type="text/event-stream")


async def _chat_frames(
    answer: dict[str, Any], item: dict[str, Any], with_usage: bool
) -> AsyncIterator[bytes]:
    delay = float(item.get("chunk_delay_s", 0.0))
    head = {k: answer[k] for k in ("id", "created", "model")} | {"object": "chat.completion.chunk"}
    message = answer["choices"][0]["message"]

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return sse(
            None,
            {
                **head,
                "choices": [
                    {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
                ],
            },
        )

    yield chunk({"role": "assistant", "content": ""})
    for call in message.get("tool_calls") or []:
        yield chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": call["id"],
                        "type": "function",
                        "function": {"name": call["function"]["name"], "arguments": ""},
                    }
                ]
            }
        )
        yield chunk(
            {"tool_calls": [{"index": 0, "function": {"arguments": call["function"]["arguments"]}}]}
        )
    if message.get("content"):
        for piece in split_chunks(message["content"], int(item.get("chunks", 3))):
            if delay:
                await asyncio.sleep(delay)
            yield chunk({"content": piece})
    yield chunk({}, answer["choices"][0]["finish_reason"])
    if with_usage:
        yield sse(None, {**head, "choices": [], "usage": answer["usage"]})
    yield sse(None, "[DONE]")


app = make_app({"/v1/responses": responses, "/v1/chat/completions": chat}, error_body)

if __name__ == "__main__":
    main(app, "OpenAI")
