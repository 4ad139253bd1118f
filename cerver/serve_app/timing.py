"""Where a request's milliseconds go, as a standard ``Server-Timing`` response header.

``ServerTiming`` (plain ASGI middleware, outermost) gives each HTTP request a ``Timing`` and,
when the response starts, writes its phases plus ``app`` (the whole time inside this
replica's app) into the header, e.g. for ``POST /v2/sessions/:id/run``::

    Server-Timing: auth;dur=0.02, session;dur=0.61, admit;dur=0.90, route;dur=0.00,
        actor;dur=1.10, sandbox;dur=2.31, commit;dur=0.84, host;dur=0.12,
        release;dur=0.75, app;dur=6.90

A client's own latency minus ``app`` is the HTTP hop (Serve's proxy or HAProxy, the
network, uvicorn). Routes record phases with ``span(request, name)`` or ``add``; a phase
recorded twice is summed. Cheap (a list of floats per request); turned off with
``CERVER_SERVER_TIMING=0``. docs/performance.md reads these numbers.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import Request

STATE_KEY = "server_timing"


class Timing:
    __slots__ = ("phases", "started")

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.phases: dict[str, float] = {}

    def add(self, name: str, ms: float) -> None:
        self.phases[name] = self.phases.get(name, 0.0) + ms

    def header(self) -> str:
        total = (time.perf_counter() - self.started) * 1000.0
        parts = [f"{name};dur={ms:.3f}" for name, ms in self.phases.items()]
        parts.append(f"app;dur={total:.3f}")
        return ", ".join(parts)


def parse(header: str) -> dict[str, float]:
    """A ``Server-Timing`` header back into its phases (ms); a phase named twice is summed,
    an entry without ``dur`` is skipped. What benches and tests read."""
    out: dict[str, float] = {}
    for part in header.split(","):
        name, _, rest = part.strip().partition(";")
        if name and rest.startswith("dur="):
            out[name] = out.get(name, 0.0) + float(rest[4:])
    return out


def timing_of(request: Request) -> Timing | None:
    found: Timing | None = request.scope.get("state", {}).get(STATE_KEY)
    return found


@contextmanager
def span(request: Request, name: str) -> Iterator[None]:
    """Times the block as phase ``name`` (a no-op when timing is off)."""
    timing = timing_of(request)
    if timing is None:
        yield
        return
    started = time.perf_counter()
    try:
        yield
    finally:
        timing.add(name, (time.perf_counter() - started) * 1000.0)


def add(request: Request, name: str, ms: float) -> None:
    timing = timing_of(request)
    if timing is not None:
        timing.add(name, ms)


class ServerTiming:
    """Adds ``Server-Timing`` to every HTTP response of the wrapped app."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        timing = Timing()
        scope.setdefault("state", {})[STATE_KEY] = timing

        async def timed_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                if not any(name.lower() == b"server-timing" for name, _ in headers):
                    # (a route that wrote its own, e.g. the dashboard's pages, keeps it)
                    headers.append((b"server-timing", timing.header().encode()))
                    message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, timed_send)
