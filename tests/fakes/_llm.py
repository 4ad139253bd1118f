"""What the fake model servers (tests/fakes/openai.py, tests/fakes/anthropic.py) share:
the script a test gives them, the log of what they received, and the control endpoints.

Control endpoints (not part of any vendor's API):

    POST /_fake/script    {"items": [ITEM, ...]}  queue scripted answers
    POST /_fake/reset     forget the script and the log
    GET  /_fake/received  every request received: path, auth headers, JSON body, and
                          for streams whether the client went away before the end
    GET  /_fake/stats     {"max_in_flight": N}: the most requests it was answering at once

An ITEM shapes the next request whose model matches its "model" (or any request, when the
item has none). Fields, all optional:

    status: 429 | 500 | ...   answer this HTTP error instead (with "retry_after": "1")
    delay_s: 0.5              wait before answering (a slow upstream)
    text: "..."               the answer text (default: "[MODEL] answer to: LAST USER TEXT")
    tool_call: {"name": "run", "arguments": {...}}   call a tool instead of answering
    finish: "length" | "refusal"                      how the answer ends
    cached: 10, reasoning: 5  report that many cached input / reasoning tokens
    no_usage: true            a stream that reports no usage (Chat Completions only)
    chunks: 50, chunk_delay_s: 0.1                    a long, slow stream

Token counts are words (whitespace-separated), so tests can work them out by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


class Script:
    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.received: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.generation = 0

    def next_for(self, model: str) -> dict[str, Any]:
        for i, item in enumerate(self.items):
            if item.get("model") in (None, model):
                return self.items.pop(i)
        return {}

    def record(self, request: Request, body: dict[str, Any]) -> dict[str, Any]:
        entry = {
            "path": request.url.path,
            "authorization": request.headers.get("authorization"),
            "x_api_key": request.headers.get("x-api-key"),
            "body": body,
            "stream": bool(body.get("stream")),
            "completed": False,
            "disconnected": False,
        }
        self.received.append(entry)
        return entry


def words(text: str) -> int:
    return len(text.split())


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def default_text(model: str, last_user: str) -> str:
    return f"[{model}] answer to: {last_user[:200]}"


def sse(event: str | None, data: dict[str, Any] | str) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data)
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()


def split_chunks(text: str, n: int) -> list[str]:
    """The text in about ``n`` pieces (word boundaries kept with their spaces)."""
    parts = text.split(" ")
    if n <= 1 or len(parts) <= 1:
        return [text]
    size = max(1, len(parts) // n)
    pieces = [" ".join(parts[i : i + size]) for i in range(0, len(parts), size)]
    return [p + (" " if i < len(pieces) - 1 else "") for i, p in enumerate(pieces)]


async def tracked(entry: dict[str, Any], frames: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Stream frames; note whether the client stayed to the end."""
    try:
        async for frame in frames:
            yield frame
        entry["completed"] = True
    except (asyncio.CancelledError, GeneratorExit):
        entry["disconnected"] = True
        raise
    finally:
        if not entry["completed"]:
            entry["disconnected"] = True


Handler = Callable[[Script, Request, dict[str, Any], dict[str, Any]], Any]


def make_app(
    routes: dict[str, Handler], error_body: Callable[[int, str], dict[str, Any]]
) -> Starlette:
    script = Script()

    def endpoint(handler: Handler) -> Callable[[Request], Any]:
        async def serve(request: Request) -> Response:
            body = await request.json()
            entry = script.record(request, body)
            item = script.next_for(str(body.get("model")))
            generation = script.generation  # a reset forgets requests that came before
            script.in_flight += 1
            script.max_in_flight = max(script.max_in_flight, script.in_flight)
            try:
                if item.get("delay_s"):
                    await asyncio.sleep(float(item["delay_s"]))
            finally:
                if generation == script.generation:
                    script.in_flight -= 1
            status = item.get("status")
            if status:
                headers = {"retry-after": str(item["retry_after"])} if "retry_after" in item else {}
                entry["completed"] = True
                return JSONResponse(
                    error_body(int(status), f"scripted {status}"),
                    status_code=int(status),
                    headers=headers,
                )
            answer = handler(script, request, body, item)
            if isinstance(answer, StreamingResponse):
                answer.body_iterator = tracked(entry, answer.body_iterator)  # type: ignore[arg-type]
            else:
                entry["completed"] = True
            return answer  # type: ignore[no-any-return]

        return serve

    async def put_script(request: Request) -> Response:
        script.items.extend((await request.json()).get("items", []))
        return JSONResponse({"queued": len(script.items)})

    async def reset(_request: Request) -> Response:
        script.items.clear()
        script.received.clear()
        script.max_in_flight = 0
        script.in_flight = 0
        script.generation += 1
        return JSONResponse({"ok": True})

    async def received(_request: Request) -> Response:
        return JSONResponse(script.received)

    async def stats(_request: Request) -> Response:
        return JSONResponse({"max_in_flight": script.max_in_flight})

    return Starlette(
        routes=[
            *[Route(path, endpoint(handler), methods=["POST"]) for path, handler in routes.items()],
            Route("/_fake/script", put_script, methods=["POST"]),
            Route("/_fake/reset", reset, methods=["POST"]),
            Route("/_fake/received", received, methods=["GET"]),
            Route("/_fake/stats", stats, methods=["GET"]),
        ]
    )


def main(app: Starlette, name: str) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=f"a fake {name} API server for tests")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
