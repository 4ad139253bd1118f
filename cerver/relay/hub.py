"""RelayHub: the one Ray actor that knows which relay is connected, and routes calls to it.

A relay's WebSocket ends at one Serve replica, but a call for its compute comes from any
process (the session host actor of a session on that relay). So the replica holding the
socket registers the connection here (``attach``) and pumps: it long-polls ``outbox`` for
frames to send and hands every frame the relay sends to ``deliver``. A caller anywhere
does ``call`` (one request, one response) or ``open_stream`` + ``stream_next``.

    caller (session host) --call--> RelayHub --outbox--> replica --ws--> relay
    caller <--result-- RelayHub <--deliver-- replica <--ws-- relay

A dropped connection fails every call in flight on it with ``ComputeLost`` (503: nothing
is acknowledged that may not have happened); a call for a compute with no connection is
``ComputeOffline``. A replica that stops pumping for ``LEASE_S`` loses its connection, so a
replica that died cannot keep a relay out forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import ray

from cerver.errors import CerverError, ComputeLost, ComputeOffline, Conflict, ProviderError

HUB_NAME = "cerver-relay-hub"
LEASE_S = 15.0
# How long a caller waits for a relay beyond the run's own timeout before giving up.
ANSWER_MARGIN_S = 30.0


@dataclass
class _Connection:
    compute_id: str
    conn_id: str
    replica: str
    cap: int
    outbox: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    pending: dict[str, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    streams: dict[str, asyncio.Queue[dict[str, Any] | None]] = field(default_factory=dict)
    inflight: int = 0
    pumped_at: float = field(default_factory=time.monotonic)

    def stale(self) -> bool:
        return time.monotonic() - self.pumped_at > LEASE_S


class RelayError(CerverError):
    """An error the relay host answered with, kept with its own status and code."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message, details=details)
        self.status = status
        self.code = code


def error_from(status: int, body: dict[str, Any]) -> CerverError:
    err = body.get("error") or {}
    return RelayError(
        status,
        str(err.get("code", "relay_error")),
        str(err.get("message", "the relay host failed")),
        err.get("details"),
    )


class RelayHubCore:
    """The hub's logic, plain asyncio (the Ray actor below only hosts it)."""

    def __init__(self) -> None:
        self.conns: dict[str, _Connection] = {}
        self.stream_owner: dict[str, str] = {}

    # --- the replica holding the socket ------------------------------------------------------
    def attach(self, compute_id: str, replica: str, cap: int) -> str:
        old = self.conns.get(compute_id)
        if old is not None and not old.stale():
            raise Conflict(
                f"a relay is already connected as compute {compute_id}; one credential serves "
                "one relay (stop the other one, or log in again on this machine)"
            )
        if old is not None:
            self._drop(old, "its replica stopped pumping")
        conn_id = secrets.token_hex(8)
        self.conns[compute_id] = _Connection(compute_id, conn_id, replica, max(1, cap))
        return conn_id

    def detach(self, compute_id: str, conn_id: str, reason: str) -> None:
        conn = self.conns.get(compute_id)
        if conn is not None and conn.conn_id == conn_id:
            self._drop(conn, reason)

    def kick(self, compute_id: str, reason: str) -> None:
        """Close a connection from the gateway's side (its credential was revoked)."""
        conn = self.conns.get(compute_id)
        if conn is not None:
            self._drop(conn, reason)

    def _drop(self, conn: _Connection, reason: str) -> None:
        self.conns.pop(conn.compute_id, None)
        lost = ComputeLost(
            f"the relay for compute {conn.compute_id} disconnected during the call ({reason}); "
            "its outcome is unknown",
            details={"compute_id": conn.compute_id},
        )
        for fut in conn.pending.values():
            if not fut.done():
                fut.set_exception(lost)
        for stream_id, queue in conn.streams.items():
            queue.put_nowait({"type": "stream_end", "status": 503, "body": lost.to_body()})
            self.stream_owner.pop(stream_id, None)
        conn.pending.clear()
        conn.streams.clear()
        conn.outbox.put_nowait({"type": "disconnect", "reason": reason})

    async def outbox(self, compute_id: str, conn_id: str, wait_s: float) -> list[dict[str, Any]]:
        conn = self._own(compute_id, conn_id)
        conn.pumped_at = time.monotonic()
        frames: list[dict[str, Any]] = []
        with contextlib.suppress(asyncio.TimeoutError):
            frames.append(await asyncio.wait_for(conn.outbox.get(), wait_s))
        while not conn.outbox.empty():
            frames.append(conn.outbox.get_nowait())
        conn.pumped_at = time.monotonic()
        return frames

    def deliver(self, compute_id: str, conn_id: str, frame: dict[str, Any]) -> None:
        conn = self._own(compute_id, conn_id)
        kind = frame["type"]
        if kind == "response":
            fut = conn.pending.pop(frame["id"], None)
            if fut is not None and not fut.done():
                fut.set_result(frame)
        elif kind in ("stream", "stream_end"):
            queue = conn.streams.get(frame["stream_id"])
            if queue is not None:
                queue.put_nowait(frame)

    def _own(self, compute_id: str, conn_id: str) -> _Connection:
        conn = self.conns.get(compute_id)
        if conn is None or conn.conn_id != conn_id:
            raise ComputeLost(f"connection {conn_id} of compute {compute_id} is gone")
        return conn

    # --- callers -------------------------------------------------------------------------------
    def _connected(self, compute_id: str) -> _Connection:
        conn = self.conns.get(compute_id)
        if conn is None:
            raise ComputeOffline(
                f"relay compute {compute_id} is offline (its relay is not connected); start "
                "'cerver relay' on that machine, or send \"fallback\": true to move elsewhere",
                details={"compute_id": compute_id},
            )
        return conn

    async def call(
        self, compute_id: str, op: str, body: dict[str, Any], timeout_s: float
    ) -> dict[str, Any]:
        conn = self._connected(compute_id)
        request_id = secrets.token_hex(8)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        conn.pending[request_id] = fut
        conn.inflight += 1
        try:
            conn.outbox.put_nowait({"type": "request", "id": request_id, "op": op, "body": body})
            try:
                frame = await asyncio.wait_for(fut, timeout_s + ANSWER_MARGIN_S)
            except TimeoutError:
                raise ProviderError(
                    f"the relay for compute {compute_id} did not answer {op} in time"
                ) from None
        finally:
            conn.pending.pop(request_id, None)
            conn.inflight -= 1
        if frame["status"] != 200:
            raise error_from(frame["status"], frame["body"])
        result: dict[str, Any] = frame["body"]
        return result

    def open_stream(self, compute_id: str, body: dict[str, Any]) -> str:
        conn = self._connected(compute_id)
        stream_id = secrets.token_hex(8)
        conn.streams[stream_id] = asyncio.Queue()
        conn.inflight += 1
        self.stream_owner[stream_id] = compute_id
        conn.outbox.put_nowait({"type": "open", "stream_id": stream_id, "body": body})
        return stream_id

    async def stream_next(self, stream_id: str, wait_s: float) -> list[dict[str, Any]]:
        """The next frames of a stream (at least one unless ``wait_s`` passed); the last one
        is ``stream_end``."""
        compute_id = self.stream_owner.get(stream_id)
        conn = self.conns.get(compute_id or "")
        queue = conn.streams.get(stream_id) if conn is not None else None
        if queue is None:
            lost = ComputeLost(f"stream {stream_id}: the relay disconnected")
            return [{"type": "stream_end", "status": 503, "body": lost.to_body()}]
        frames: list[dict[str, Any]] = []
        with contextlib.suppress(asyncio.TimeoutError):
            first = await asyncio.wait_for(queue.get(), wait_s)
            if first is not None:
                frames.append(first)
        while not queue.empty():
            item = queue.get_nowait()
            if item is not None:
                frames.append(item)
        if any(f["type"] == "stream_end" for f in frames):
            self._end_stream(stream_id, cancel=False)
        return frames

    def close_stream(self, stream_id: str) -> None:
        self._end_stream(stream_id, cancel=True)

    def _end_stream(self, stream_id: str, *, cancel: bool) -> None:
        compute_id = self.stream_owner.pop(stream_id, None)
        conn = self.conns.get(compute_id or "")
        if conn is None or conn.streams.pop(stream_id, None) is None:
            return
        conn.inflight -= 1
        if cancel:
            conn.outbox.put_nowait({"type": "cancel", "stream_id": stream_id})

    def online(self) -> dict[str, dict[str, Any]]:
        """Connected computes with their headroom (free run slots) and replica."""
        return {
            cid: {"headroom": c.cap - c.inflight, "cap": c.cap, "replica": c.replica}
            for cid, c in self.conns.items()
            if not c.stale()
        }


# An async actor: Ray runs up to 1000 of its calls at once (every caller mostly awaits).
@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)
class RelayHub:
    def __init__(self, database_url: str) -> None:
        from cerver.store import Store

        # A hub that just started has no connections: no relay is online until it dials in.
        Store.open(database_url).relays.mark_all_offline()
        self.core = RelayHubCore()

    async def attach(self, compute_id: str, replica: str, cap: int) -> str:
        return self.core.attach(compute_id, replica, cap)

    async def detach(self, compute_id: str, conn_id: str, reason: str) -> None:
        self.core.detach(compute_id, conn_id, reason)

    async def outbox(self, compute_id: str, conn_id: str, wait_s: float) -> list[dict[str, Any]]:
        return await self.core.outbox(compute_id, conn_id, wait_s)

    async def kick(self, compute_id: str, reason: str) -> None:
        self.core.kick(compute_id, reason)

    async def deliver(self, compute_id: str, conn_id: str, frame: dict[str, Any]) -> None:
        self.core.deliver(compute_id, conn_id, frame)

    async def call(
        self, compute_id: str, op: str, body: dict[str, Any], timeout_s: float
    ) -> dict[str, Any]:
        return await self.core.call(compute_id, op, body, timeout_s)

    async def open_stream(self, compute_id: str, body: dict[str, Any]) -> str:
        return self.core.open_stream(compute_id, body)

    async def stream_next(self, stream_id: str, wait_s: float) -> list[dict[str, Any]]:
        return await self.core.stream_next(stream_id, wait_s)

    async def close_stream(self, stream_id: str) -> None:
        self.core.close_stream(stream_id)

    async def online(self) -> dict[str, dict[str, Any]]:
        return self.core.online()


def hub_handle(settings: Any) -> Any:
    """The hub, created on first use (get-or-create; detached, so it outlives its creator)."""
    return RelayHub.options(  # type: ignore[attr-defined]
        name=HUB_NAME,
        namespace=settings.ray_namespace,
        lifetime="detached",
        get_if_exists=True,
    ).remote(settings.database_url)
