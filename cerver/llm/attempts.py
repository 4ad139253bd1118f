"""Calling upstream with Cerver's retries and fallbacks.

For each model in order (the chosen one, then ``fallbacks``): try, and on a retryable
failure (429, 5xx, connection error, timeout) wait and try again, up to
``CERVER_LLM_RETRIES`` more times, then move to the next model. The wait is the upstream's
``Retry-After`` when it sent one, else exponential backoff (0.25 s, 0.5 s, 1 s, ...);
a ``Retry-After`` longer than ``CERVER_LLM_RETRY_MAX_WAIT_S`` skips to the next model at
once. A client error (another 4xx) is final. A stream that already sent text is never
retried (the text would repeat). ``attempts`` records every try: model, harness, status,
the wait before the next try, and the error.

Each try holds a budget reservation for its worst case while it runs (cerver/llm/budget.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from pydantic import BaseModel, Field

from cerver.errors import UpstreamFailed
from cerver.llm.catalog import ModelEntry
from cerver.llm.harnesses import Harness, UpstreamError
from cerver.llm.types import Call, Completion, TextDelta

BACKOFF_BASE_S = 0.25


class Attempt(BaseModel):
    model: str
    harness: str
    status: int | str  # HTTP status, "ok", "timeout" or "connection_error"
    ms: float
    wait_ms: float = 0.0
    error: str | None = None


class Answered(BaseModel):
    """The completion of the try that succeeded, with every try it took."""

    entry: ModelEntry
    completion: Completion
    attempts: list[Attempt] = Field(default_factory=list)


class InFlight:
    """The try in progress (its model, request and reservation), so a turn that is cancelled
    mid-call (the client went away) can settle what that try produced."""

    def __init__(self) -> None:
        self.entry: ModelEntry | None = None
        self.call: Call | None = None
        self.reservation: Any = None

    def set(self, entry: ModelEntry | None, call: Call | None, reservation: Any) -> None:
        self.entry, self.call, self.reservation = entry, call, reservation


HarnessFor = Callable[[ModelEntry], Harness]
Reserve = Callable[[ModelEntry, Call], Awaitable[Any]]
Release = Callable[[Any], Awaitable[None]]


async def call_with_fallbacks(
    models: list[ModelEntry],
    make_call: Callable[[ModelEntry], Call],
    *,
    harness_for: HarnessFor,
    reserve: Reserve,
    release: Release,
    stream: bool,
    retries: int,
    max_wait_s: float,
    attempts: list[Attempt],
    inflight: InFlight,
) -> AsyncIterator[TextDelta | tuple[Answered, Any]]:
    """Yields text deltas (streaming only), then ``(Answered, reservation)``; the caller
    settles the reservation with the real usage. Raises UpstreamFailed when every try
    failed (nothing is held then)."""
    last: UpstreamError | None = None
    for entry in models:
        call = make_call(entry)
        for n in range(retries + 1):
            harness = harness_for(entry)
            reservation = await reserve(entry, call)
            inflight.set(entry, call, reservation)
            started = time.perf_counter()
            sent_text = False
            try:
                if stream:
                    completion = None
                    async for item in harness.stream(call):
                        if isinstance(item, TextDelta):
                            sent_text = True
                            yield item
                        else:
                            completion = item
                    assert completion is not None
                else:
                    completion = await harness.complete(call)
            except UpstreamError as exc:
                inflight.set(None, None, None)
                await release(reservation)
                last = exc
                attempt = Attempt(
                    model=entry.name,
                    harness=entry.harness,
                    status=_status(exc),
                    ms=_ms(started),
                    error=exc.message,
                )
                attempts.append(attempt)
                if sent_text or not exc.retryable:
                    raise _failed(attempts, exc) from exc
                wait = _wait(exc, n, max_wait_s)
                if wait is None or n == retries:
                    break  # next model
                attempt.wait_ms = round(wait * 1000.0, 3)
                await asyncio.sleep(wait)
                continue
            inflight.set(None, None, None)
            attempts.append(
                Attempt(model=entry.name, harness=entry.harness, status="ok", ms=_ms(started))
            )
            yield Answered(entry=entry, completion=completion, attempts=attempts), reservation
            return
    assert last is not None
    raise _failed(attempts, last)


def _wait(exc: UpstreamError, n: int, max_wait_s: float) -> float | None:
    if exc.retry_after_s is not None:
        return exc.retry_after_s if exc.retry_after_s <= max_wait_s else None
    return min(max_wait_s, BACKOFF_BASE_S * (2**n))


def _status(exc: UpstreamError) -> int | str:
    if exc.status is not None:
        return exc.status
    return "timeout" if exc.kind == "timeout" else "connection_error"


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 3)


def _failed(attempts: list[Attempt], exc: UpstreamError) -> UpstreamFailed:
    tried = ", ".join(f"{a.model}: {a.status}" for a in attempts)
    return UpstreamFailed(
        f"the model call failed ({exc.message}); tried {tried}. Retry later, or pass "
        '"fallbacks" with other models',
        details={"attempts": [a.model_dump() for a in attempts]},
    )
