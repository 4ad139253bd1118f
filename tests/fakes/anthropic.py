"""A fake Anthropic API over real HTTP: ``POST /v1/messages`` (the Messages API), JSON or
streamed (``event: message_start`` ... ``message_stop``, the event shapes the official
SDK parses), with ``tool_use`` blocks, usage (cache reads and writes included), scripted
errors and delays. Scripting and the received log: tests/fakes/_llm.py.

    python -m tests.fakes.anthropic --port 8802
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from tests.fakes._llm import Script, default_text, main, make_app, new_id, split_chunks, sse, words

_ERRORS = {
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
    400: "invalid_request_error",
}


def error_body(status: int, message: str) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {"type": _ERRORS.get(status, "api_error"), "message": message},
    }


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    out = []
    for block in content:
        if block.get("type") == "text":
            out.append(block["text"])
        elif block.get("type") == "tool_result":
            out.append(str(block.get("content", "")))
        elif block.get("type") == "tool_use":
            out.append(json.dumps(block.get("input", {})))
    return " ".join(out)


def _answer(body: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
    model = str(body["model"])
    messages = body.get("messages", [])
    last_user = next(
        (_text_of(m["content"]) for m in reversed(messages) if m["role"] == "user"), ""
    )
    input_words = words(str(body.get("system", ""))) + sum(
        words(_text_of(m["content"])) for m in messages
    )
    cached = int(item.get("cached", 0))
    content: list[dict[str, Any]] = []
    if item.get("tool_call"):
        call = item["tool_call"]
        content.append(
            {
                "type": "tool_use",
                "id": new_id("toolu"),
                "name": call["name"],
                "input": call.get("arguments", {}),
            }
        )
        stop = "tool_use"
        out_words = words(json.dumps(call.get("arguments", {})))
    else:
        text = item.get("text", default_text(model, last_user))
        content.append({"type": "text", "text": text})
        stop = {"length": "max_tokens", "refusal": "refusal"}.get(
            item.get("finish", ""), "end_turn"
        )
        out_words = words(text)
    return {
        "id": new_id("msg"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {
            # Anthropic's input_tokens excludes the cached part.
            "input_tokens": max(0, input_words - cached),
            "output_tokens": out_words,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": cached,
        },
    }


def messages(
    _script: Script, _request: Request, body: dict[str, Any], item: dict[str, Any]
) -> Response:
    message = _answer(body, item)
    if not body.get("stream"):
        return JSONResponse(message)
    return StreamingResponse(_frames(message, item), media_type="text/event-stream")


async def _frames(message: dict[str, Any], item: dict[str, Any]) -> AsyncIterator[bytes]:
    delay = float(item.get("chunk_delay_s", 0.0))
    start = {
        **message,
        "content": [],
        "stop_reason": None,
        "usage": {**message["usage"], "output_tokens": 1},
    }
    yield sse("message_start", {"type": "message_start", "message": start})
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            yield sse(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "text", "text": ""},
                },
            )
            yield sse("ping", {"type": "ping"})
            for piece in split_chunks(block["text"], int(item.get("chunks", 3))):
                if delay:
                    await asyncio.sleep(delay)
                yield sse(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "text_delta", "text": piece},
                    },
                )
        else:
            yield sse(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {**block, "input": {}},
                },
            )
            raw = json.dumps(block["input"])
            for piece in (raw[: len(raw) // 2], raw[len(raw) // 2 :]):
                yield sse(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": piece},
                    },
                )
        yield sse("content_block_stop", {"type": "content_block_stop", "index": index})
    yield sse(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
            "usage": {"output_tokens": message["usage"]["output_tokens"]},
        },
    )
    yield sse("message_stop", {"type": "message_stop"})


app = make_app({"/v1/messages": messages}, error_body)

if __name__ == "__main__":
    main(app, "Anthropic")
