"""The gateway side of the relay: device login (RFC 8628), approval, logout, and the
WebSocket a relay dials out to. The frames are in ``cerver/relay/protocol.py``; calls from
any process reach this replica's socket through the ``RelayHub`` actor."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request, WebSocket, WebSocketDisconnect
from pydantic import Field

from cerver.errors import CerverError, NotFound, Unauthorized
from cerver.models import Strict
from cerver.relay import protocol
from cerver.relay.protocol import HostInfo
from cerver.serve_app.deps import AppContext, account, ctx
from cerver.serve_app.errors import ERROR_RESPONSES
from cerver.store import Account
from cerver.store.relay import RelayIdentity

log = logging.getLogger("cerver.relay")
_going_offline: set[asyncio.Future[None]] = set()  # hosts being marked offline
router = APIRouter(tags=["relay"], responses=ERROR_RESPONSES)

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
HELLO_WAIT_S = 10.0
PUMP_WAIT_S = 5.0


class DeviceStart(Strict):
    host: HostInfo


class DeviceToken(Strict):
    device_code: str = Field(min_length=1, max_length=200)
    grant_type: str = DEVICE_GRANT


class Approve(Strict):
    code: str = Field(min_length=1, max_length=40)


def _replica() -> str:
    return f"{os.uname().nodename}:{os.getpid()}"


def _hub(c: AppContext) -> Any:
    from cerver.relay.hub import hub_handle

    if c.relay_hub is None:
        c.relay_hub = hub_handle(c.settings)
    return c.relay_hub


def _credential(headers: Any) -> str | None:
    scheme, _, value = headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


async def _relay_identity(c: AppContext, headers: Any) -> RelayIdentity:
    credential = _credential(headers)
    found = await asyncio.to_thread(c.store.relays.authenticate, credential) if credential else None
    if found is None:
        raise Unauthorized("invalid or revoked relay credential: log in again with 'cerver relay'")
    return found


# --- device login -----------------------------------------------------------------------------
@router.post("/v2/relay/device")
async def device_start(body: DeviceStart, request: Request, c: AppContext = Depends(ctx)) -> dict:
    """RFC 8628 section 3.2: a device code for the relay, a user code for the person."""
    s = c.settings
    login = await asyncio.to_thread(
        c.store.relays.start_login,
        body.host.model_dump(),
        interval_s=s.relay_poll_interval_s,
        ttl_s=s.relay_login_ttl_s,
    )
    # A person approves in the dashboard (signed in), or with the API / CLI named below.
    verification = str(request.base_url).rstrip("/") + "/dashboard/computes"
    return {
        "device_code": login.device_code,
        "user_code": login.user_code,
        "verification_uri": verification,
        "verification_uri_complete": f"{verification}?code={login.user_code}",
        "expires_in": login.expires_in_s,
        "interval": login.interval_s,
        "approve_with": f"cerver relay approve {login.user_code}  (or POST /v2/relay/approve "
        f'{{"code": "{login.user_code}"}} with an account token)',
    }


@router.post("/v2/relay/token")
async def device_token(body: DeviceToken, c: AppContext = Depends(ctx)) -> dict:
    """RFC 8628 section 3.4: polled by the relay; errors (400) carry the RFC's codes
    (authorization_pending, slow_down, expired_token, access_denied) in our error shape."""
    if body.grant_type != DEVICE_GRANT:
        from cerver.store.relay import GrantError

        raise GrantError("unsupported_grant_type", f"grant_type must be {DEVICE_GRANT}")
    issued = await asyncio.to_thread(c.store.relays.poll, body.device_code)
    return {
        "access_token": issued.credential,
        "token_type": "Bearer",
        "compute_id": issued.compute_id,
    }


@router.post("/v2/relay/approve")
async def approve(
    body: Approve, who: Account = Depends(account), c: AppContext = Depends(ctx)
) -> dict:
    compute_id = await asyncio.to_thread(c.store.relays.approve, body.code, who.id)
    return {"approved": True, "compute_id": compute_id, "provider": "relay"}


@router.post("/v2/relay/logout")
async def logout(request: Request, c: AppContext = Depends(ctx)) -> dict:
    """Revoke the relay credential that calls this (the relay's own logout)."""
    me = await _relay_identity(c, request.headers)
    credential = _credential(request.headers) or ""
    await asyncio.to_thread(c.store.relays.revoke, credential)
    return {"revoked": True, "compute_id": me.compute_id}


@router.delete("/v2/relay/{compute_id}")
async def revoke_host(
    compute_id: str, who: Account = Depends(account), c: AppContext = Depends(ctx)
) -> dict:
    """The account revokes one of its relay hosts (a lost machine): its credential stops
    working, its socket is closed, its compute is released."""
    if not await asyncio.to_thread(c.store.relays.revoke_compute, compute_id, who.id):
        raise NotFound(f"relay compute {compute_id} not found; list yours with GET /v2/computes")
    await _hub(c).kick.remote(compute_id, "the relay credential was revoked")
    return {"revoked": True, "compute_id": compute_id}


# --- the connection ---------------------------------------------------------------------------
@router.websocket("/v2/relay/connect")
async def connect(ws: WebSocket) -> None:
    c: AppContext = ws.app.state.ctx
    await ws.accept()
    try:
        me = await _relay_identity(c, ws.headers)
    except Unauthorized as exc:
        await ws.close(protocol.CLOSE_UNAUTHORIZED, exc.message)
        return
    await RelaySocket(c, ws, me).serve()


class RelaySocket:
    """One relay's connection at this replica: hello, register with the hub, then three
    loops (relay -> hub, hub -> relay, heartbeats) until any of them ends."""

    def __init__(self, c: AppContext, ws: WebSocket, me: RelayIdentity) -> None:
        self.c, self.ws, self.me = c, ws, me
        self.hub = _hub(c)
        self.max_bytes = c.settings.relay_max_frame_bytes
        self.last_rx = time.monotonic()
        self.conn_id = ""
        self.reason = "closed"
        self._send_lock = asyncio.Lock()

    async def serve(self) -> None:
        cid = self.me.compute_id
        try:
            text = await asyncio.wait_for(self.ws.receive_text(), HELLO_WAIT_S)
            hello = protocol.parse(protocol.from_relay, text, self.max_bytes)
            if not isinstance(hello, protocol.Hello):
                raise protocol.ProtocolError("the first frame must be 'hello'")
        except (TimeoutError, protocol.ProtocolError, WebSocketDisconnect) as exc:
            await self._close(protocol.CLOSE_PROTOCOL, f"no valid hello: {exc}"[:120])
            return
        try:
            self.conn_id = await self.hub.attach.remote(
                cid, _replica(), hello.host.max_concurrent_runs
            )
        except CerverError as exc:
            await self._close(protocol.CLOSE_DUPLICATE, exc.message[:120])
            return
        await asyncio.to_thread(self.c.store.relays.seen, cid, "online", hello.host.model_dump())
        log.info("relay %s connected at %s", cid, _replica())
        await self._send(
            protocol.Welcome(
                type="welcome",
                compute_id=cid,
                replica=_replica(),
                heartbeat_s=self.c.settings.relay_heartbeat_s,
            )
        )
        tasks = [
            asyncio.create_task(self._from_relay()),
            asyncio.create_task(self._to_relay()),
            asyncio.create_task(self._heartbeat()),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # Shielded: when the front door cancels this handler (the relay's connection
            # dropped), the host must still go offline in the hub and the store.
            offline = asyncio.ensure_future(self._offline(cid, tasks))
            _going_offline.add(offline)  # held until done, even if this handler is not
            offline.add_done_callback(_going_offline.discard)
            await asyncio.shield(offline)

    async def _offline(self, cid: str, tasks: list[asyncio.Task[None]]) -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # Offline at once: the hub fails calls in flight, the store says offline.
        with contextlib.suppress(Exception):
            await self.hub.detach.remote(cid, self.conn_id, self.reason)
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.c.store.relays.seen, cid, "offline")
        log.info("relay %s disconnected: %s", cid, self.reason)

    async def _from_relay(self) -> None:
        while True:
            try:
                message = await self.ws.receive()
            except (WebSocketDisconnect, RuntimeError):
                self.reason = "the relay disconnected"
                return
            if message["type"] == "websocket.disconnect":
                self.reason = "the relay disconnected"
                return
            raw = message.get("text") if message.get("text") is not None else message.get("bytes")
            try:
                frame = protocol.parse(protocol.from_relay, raw or b"", self.max_bytes)
            except protocol.ProtocolError as exc:
                log.warning("relay %s: %s", self.me.compute_id, exc)
                await self._close(exc.close_code, str(exc)[:120])
                return
            self.last_rx = time.monotonic()
            if isinstance(frame, protocol.Ping):
                await self._send(protocol.Pong(type="pong"))
            elif isinstance(frame, protocol.Response | protocol.Stream | protocol.StreamEnd):
                await self.hub.deliver.remote(
                    self.me.compute_id, self.conn_id, frame.model_dump(mode="json")
                )
            elif isinstance(frame, protocol.Hello):
                await self._close(protocol.CLOSE_PROTOCOL, "'hello' may be sent once")
                return
            # pong: only refreshes last_rx

    async def _to_relay(self) -> None:
        while True:
            try:
                frames = await self.hub.outbox.remote(self.me.compute_id, self.conn_id, PUMP_WAIT_S)
            except CerverError as exc:
                await self._close(protocol.CLOSE_GOING_AWAY, exc.message[:120])
                return
            for frame in frames:
                if frame["type"] == "disconnect":
                    await self._close(protocol.CLOSE_GOING_AWAY, frame["reason"][:120])
                    return
                await self._send_raw(frame)

    async def _heartbeat(self) -> None:
        s = self.c.settings
        while True:
            await asyncio.sleep(s.relay_heartbeat_s)
            silent = time.monotonic() - self.last_rx
            if silent > s.relay_heartbeat_timeout_s:
                await self._close(protocol.CLOSE_HEARTBEAT, f"no heartbeat for {silent:.0f} s")
                return
            await self._send(protocol.Ping(type="ping"))
            await asyncio.to_thread(self.c.store.relays.seen, self.me.compute_id, "online")

    async def _send(self, frame: Any) -> None:
        async with self._send_lock:
            await self.ws.send_text(protocol.dump(frame))

    async def _send_raw(self, frame: dict[str, Any]) -> None:
        import json

        async with self._send_lock:
            await self.ws.send_text(json.dumps(frame))

    async def _close(self, code: int, reason: str) -> None:
        self.reason = reason
        with contextlib.suppress(Exception):
            await self.ws.close(code, reason)


def install(app: FastAPI) -> None:
    """The relay routes, and a header naming the replica that answered (how the tests and
    operators see that a run for a relay arrived at a replica not holding its socket)."""
    app.include_router(router)
    app.add_middleware(ReplicaHeader)


class ReplicaHeader:
    """Adds ``X-Cerver-Replica`` to every HTTP response. Plain ASGI: Starlette's
    ``@app.middleware("http")`` ran each request through an extra task and memory stream
    (about a millisecond per request on 2 cores; docs/performance.md)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.value = _replica().encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_header(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", ()), (b"x-cerver-replica", self.value)]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_header)
