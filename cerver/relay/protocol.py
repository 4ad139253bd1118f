"""The wire protocol between a relay host and the gateway: JSON text frames on one WebSocket.

The relay dials out to ``/v2/relay/connect`` with ``Authorization: Bearer <relay credential>``.

    relay -> gateway                          gateway -> relay
    hello     {host}                 first    welcome   {compute_id, replica, heartbeat_s}
    response  {id, status, body}              request   {id, op, body}
    stream    {stream_id, event}              open      {stream_id, op, body}   (run_stream)
    stream_end{stream_id, status, body}       cancel    {stream_id}   (consumer went away)
    ping / pong                               ping / pong
                                              disconnect {reason}   (then the socket closes)

``status`` is an HTTP status: 200 with the op's result in ``body``, else ``body`` is the one
error shape ``{"error": {"code", "message", "details"}}``. Every frame is validated; a frame
over ``max_frame_bytes`` or one that does not parse closes the socket with the reason.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

# Close codes (4000-4999 are the application's own).
CLOSE_UNAUTHORIZED = 4401
CLOSE_DUPLICATE = 4409
CLOSE_HEARTBEAT = 4408
CLOSE_PROTOCOL = 1007  # RFC 6455: data inconsistent with the message type
CLOSE_TOO_BIG = 1009  # RFC 6455: message too big
CLOSE_GOING_AWAY = 1001

OPS = (
    "create_sandbox",
    "run",
    "install_package",
    "write_file",
    "read_file",
    "get_state",
    "set_state",
    "delete_sandbox",
    "is_alive",
)
Op = Literal[
    "create_sandbox",
    "run",
    "install_package",
    "write_file",
    "read_file",
    "get_state",
    "set_state",
    "delete_sandbox",
    "is_alive",
]


class _Frame(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HostInfo(BaseModel):
    hostname: str = Field(max_length=255)
    os: str = Field(max_length=255)
    cpu_count: int = Field(ge=0)
    memory_mb: int = Field(ge=0)
    max_concurrent_runs: int = Field(ge=1)
    network_allowed: bool
    isolation: str = Field(max_length=40)
    version: str = Field(max_length=40)


class Hello(_Frame):
    type: Literal["hello"]
    host: HostInfo


class Welcome(_Frame):
    type: Literal["welcome"]
    compute_id: str
    replica: str
    heartbeat_s: float


class Request(_Frame):
    type: Literal["request"]
    id: str = Field(max_length=64)
    op: Op
    body: dict[str, Any]


class Open(_Frame):
    type: Literal["open"]
    stream_id: str = Field(max_length=64)
    body: dict[str, Any]


class Cancel(_Frame):
    type: Literal["cancel"]
    stream_id: str = Field(max_length=64)


class Response(_Frame):
    type: Literal["response"]
    id: str = Field(max_length=64)
    status: int
    body: dict[str, Any]


class Stream(_Frame):
    type: Literal["stream"]
    stream_id: str = Field(max_length=64)
    event: dict[str, Any]


class StreamEnd(_Frame):
    type: Literal["stream_end"]
    stream_id: str = Field(max_length=64)
    status: int = 200
    body: dict[str, Any] = Field(default_factory=dict)


class Ping(_Frame):
    type: Literal["ping"]


class Pong(_Frame):
    type: Literal["pong"]


class Disconnect(_Frame):
    type: Literal["disconnect"]
    reason: str = ""


FromRelay = Annotated[
    Hello | Response | Stream | StreamEnd | Ping | Pong, Field(discriminator="type")
]
ToRelay = Annotated[
    Welcome | Request | Open | Cancel | Ping | Pong | Disconnect, Field(discriminator="type")
]
from_relay: TypeAdapter[Any] = TypeAdapter(FromRelay)
to_relay: TypeAdapter[Any] = TypeAdapter(ToRelay)


class ProtocolError(ValueError):
    """A frame that breaks the protocol; ``close_code`` is what to close the socket with."""

    def __init__(self, message: str, close_code: int = CLOSE_PROTOCOL) -> None:
        super().__init__(message)
        self.close_code = close_code


def parse(adapter: TypeAdapter[Any], text: str | bytes, max_bytes: int) -> Any:
    """Validate one frame; a frame over ``max_bytes`` or malformed raises ``ProtocolError``."""
    if len(text) > max_bytes:
        raise ProtocolError(
            f"frame of {len(text)} bytes is over the {max_bytes} limit", CLOSE_TOO_BIG
        )
    try:
        return adapter.validate_json(text)
    except ValueError as exc:
        first = str(exc).splitlines()
        raise ProtocolError(f"malformed frame: {' '.join(first[:3])[:200]}") from None


def dump(frame: BaseModel) -> str:
    return frame.model_dump_json()


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return {"error": body}
