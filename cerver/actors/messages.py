"""What crosses the Ray boundary between a Serve replica and the actors it calls: typed
values (pydantic), never loose dicts, so a route reads attributes and a code walk from the
route reaches the actor method.

Session hosts (``actors/session.py``) answer ``attach`` with ``Attached`` and ``run`` with
``SessionRun``, and ``run_stream`` yields ``StreamStarted``, then ``ExecEvent`` chunks, then
one ``StreamExited``. Sandbox actors (``actors/sandbox.py``) answer with the adapter
contract's own types (``ExecResult``, ``InstallResult``, ``SandboxState``, ``ExecEvent``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from cerver.adapters.base import ExecEvent, ExecResult


class Attached(BaseModel):
    """The compute a session is bound to after an attach or swap (all None: detached)."""

    provider: str | None = None
    compute_id: str | None = None
    sandbox_id: str | None = None
    isolation: str | None = None
    # Milliseconds inside the host (the Server-Timing header of a create): reading the
    # session, provisioning (admission, the adapter's create, the compute row), committing.
    timings: dict[str, float] = {}


class SessionRun(BaseModel):
    """One acknowledged run: the result and the transcript entry it was committed as."""

    result: ExecResult
    seq: int
    provider: str
    compute_id: str
    latency_ms: float
    # Milliseconds inside the host: the sandbox's run, the store commit, the rest (the
    # Server-Timing header's sandbox / commit / host phases).
    timings: dict[str, float] = {}


class StreamStarted(BaseModel):
    """The first event of a streamed run, sent before the process starts."""

    type: Literal["start"] = "start"
    provider: str
    stream_open_ms: float

    def wire(self) -> dict[str, Any]:
        return self.model_dump()


class StreamExited(BaseModel):
    """The last event of a streamed run: the whole result, committed as entry ``seq``."""

    type: Literal["exit"] = "exit"
    data: str = ""
    result: ExecResult
    seq: int

    def wire(self) -> dict[str, Any]:
        return self.model_dump()


SessionStreamItem = StreamStarted | ExecEvent | StreamExited


def session_event_wire(item: SessionStreamItem) -> dict[str, Any]:
    """The SSE data of one streamed session event (output chunks omit empty fields)."""
    if isinstance(item, ExecEvent):
        return item.model_dump(exclude_none=True)
    return item.wire()
