"""A fake Daytona: the control-plane REST API and the sandbox toolbox the official
``daytona`` SDK (0.226, async client) speaks, over real HTTP and WebSockets, executing
commands for real in local sandboxes.

    python -m tests.fakes.daytona --port N [--reject-key K]
    -> CERVER_DAYTONA_API_URL=http://127.0.0.1:N/api

Control plane (``Authorization: Bearer <api key>``; errors are Daytona's NestJS envelope
``{"statusCode", "timestamp", "path", "error", "message"}``, a refused key 401):

    POST   /api/sandbox                    CreateSandbox -> Sandbox (state "started")
    GET    /api/sandbox?limit=&cursor=     -> {items, nextCursor}
    GET    /api/sandbox/{idOrName}         -> Sandbox; 404 "Sandbox not found"
    DELETE /api/sandbox/{idOrName}         -> Sandbox (state "destroyed"); it is gone after
    POST   /api/sandbox/{idOrName}/stop    -> Sandbox (state "stopped": its processes end)
    POST   /api/sandbox/{idOrName}/start   -> Sandbox (state "started")
    GET    /api/sandbox/{id}/toolbox-proxy-url -> {url}

Toolbox (every Sandbox carries ``toolboxProxyUrl`` = ``<origin>/toolbox``; the SDK puts
the sandbox id first in the path, and sends the same bearer key):

    POST   /toolbox/{id}/process/session              {sessionId}
    DELETE /toolbox/{id}/process/session/{sid}        kills what runs in it
    POST   /toolbox/{id}/process/session/{sid}/exec   {command, runAsync} -> {cmdId, ...}
    GET    /toolbox/{id}/process/session/{sid}/command/{cid} -> {id, command, exitCode}
    WS     /toolbox/{id}/process/session/{sid}/command/{cid}/logs?follow=true
           output framed by 0x01 0x01 0x01 (stdout) / 0x02 0x02 0x02 (stderr), closed
           (1000) when the command exits
    POST   /toolbox/{id}/process/execute              {command, cwd, envs, timeout}
                                                      -> {exitCode, result}
    WS     /toolbox/{id}/process/interpreter/execute  send {code, envs?, timeout?}; get
           {"type": "stdout"|"stderr", "text"} and {"type": "error", name, value,
           traceback}; closed 1000 when done, 4008 on the execution's timeout
    POST   /toolbox/{id}/files/bulk-upload            multipart files[i].path / files[i].file
    POST   /toolbox/{id}/files/bulk-download          {paths} -> multipart: one "file" or
                                                      "error" part per path
    GET    /toolbox/{id}/work-dir                     -> {dir}

Events: a Socket.IO gateway at ``/api/socket.io/`` (auth ``{"token": <api key>}``, a
refused key cannot connect) sends each client ``sandbox.created`` and
``sandbox.state.updated`` ``{sandbox, oldState, newState}`` for the sandboxes its key
made, which is how the SDK waits for a state without polling.

Where the fake is simpler than Daytona: a session runs each command in a fresh shell
(Daytona keeps one shell per session, so ``cd`` would persist); there is one interpreter
context per sandbox (the default one); state changes are immediate.

Test controls (not Daytona's API) live under ``/_fake`` (tests/fakes/_controls.py);
``GET /_fake/requests`` lists method (``WS`` and ``SIO`` for WebSocket and Socket.IO
connections), path, query, key and JSON body of every request received.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import socketio
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import UploadFile

from tests.fakes._controls import Controls
from tests.fakes.local_backend import LocalBackend, PathOutside, fake_arguments, serve_fake

ROOT = "/home/daytona"
ENV_NAME = "CERVER_DAYTONA_API_URL"
STDOUT, STDERR = b"\x01\x01\x01", b"\x02\x02\x02"
INTERPRETER_TIMEOUT_CLOSE = 4008
DAEMON = "DAYTONA_DAEMON"


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _error(status: int, error: str, message: str, path: str, **headers: str) -> JSONResponse:
    body = {
        "statusCode": status,
        "timestamp": _now(),
        "path": path,
        "error": error,
        "message": message,
    }
    return JSONResponse(body, status, headers=headers)


def _key(headers: Any) -> str:
    auth = headers.get("authorization", "")
    return str(auth[len("Bearer ") :]) if auth.startswith("Bearer ") else ""


@dataclass
class Command:
    id: str
    command: str
    exit_code: int | None = None
    output: list[tuple[bytes, bytes]] = field(default_factory=list)  # (prefix, data)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    task: asyncio.Task[None] | None = None

    def payload(self) -> dict[str, Any]:
        return {"id": self.id, "command": self.command, "exitCode": self.exit_code}

    def _past(self, seen: int) -> bool:
        return len(self.output) > seen or self.exit_code is not None

    async def frames(self) -> AsyncIterator[bytes]:
        """Framed output from the start, as it comes, until the command exits."""
        seen = 0
        while True:
            async with self.changed:
                await self.changed.wait_for(functools.partial(self._past, seen))
                fresh, done = self.output[seen:], self.exit_code is not None
            seen += len(fresh)
            for prefix, data in fresh:
                yield prefix + data
            if done and seen >= len(self.output):
                return


@dataclass
class Sandbox:
    id: str
    name: str
    local_id: str
    env: dict[str, str]
    labels: dict[str, str]
    network_block_all: bool
    auto_stop_interval: int
    target: str
    owner: str  # the key that made it: its events go to that key's clients
    state: str = "started"
    created_at: str = field(default_factory=_now)
    sessions: dict[str, dict[str, Command]] = field(default_factory=dict)

    def payload(self, toolbox_url: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "organizationId": "org-fake",
            "name": self.name,
            "snapshot": "daytona-small",
            "user": "daytona",
            "env": self.env,
            "labels": self.labels,
            "public": False,
            "networkBlockAll": self.network_block_all,
            "kvm": False,
            "target": self.target,
            "cpu": 1,
            "gpu": 0,
            "memory": 1,
            "disk": 3,
            "state": self.state,
            "desiredState": "destroyed" if self.state == "destroyed" else self.state,
            "autoStopInterval": self.auto_stop_interval,
            "autoArchiveInterval": 10080,
            "autoDeleteInterval": -1,
            "createdAt": self.created_at,
            "updatedAt": _now(),
            "toolboxProxyUrl": toolbox_url,
        }


class FakeDaytona(Controls):
    def __init__(self, reject_keys: tuple[str, ...] = ()) -> None:
        super().__init__(reject_keys)
        self.backend = LocalBackend(ROOT)
        self.sandboxes: dict[str, Sandbox] = {}
        self.events = socketio.AsyncServer(async_mode="asgi", cors_allowed_origins=[])
        self.events.on("connect", self._connect)

    # ------------------------------------------------------------------ helpers

    async def _connect(self, sid: str, _environ: dict[str, Any], auth: Any) -> None:
        key = str((auth or {}).get("token") or "") if isinstance(auth, dict) else ""
        self._record("SIO", "/api/socket.io/", {}, key, None)
        if not key or key in self.reject_keys:
            raise socketio.exceptions.ConnectionRefusedError("Unauthorized")
        await self.events.enter_room(sid, key)

    async def _moved(self, sandbox: Sandbox, state: str, toolbox_url: str) -> None:
        old, sandbox.state = sandbox.state, state
        body = {"sandbox": sandbox.payload(toolbox_url), "oldState": old, "newState": state}
        await self.events.emit("sandbox.state.updated", body, room=sandbox.owner)

    def _find(self, id_or_name: str) -> Sandbox | None:
        found = self.sandboxes.get(id_or_name)
        if found is None:
            found = next((s for s in self.sandboxes.values() if s.name == id_or_name), None)
        return found

    def _record(self, method: str, path: str, query: dict[str, str], key: str, body: Any) -> None:
        entry: dict[str, Any] = {"method": method, "path": path, "query": query, "key": key}
        if body is not None:
            entry["body"] = body
        self.requests.append(entry)

    def _fault(self, path: str) -> JSONResponse | None:
        fault = self.take_fault(path)
        if fault is None:
            return None
        headers = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
        text = "ThrottlerException: Too Many Requests" if fault.status == 429 else "injected"
        return _error(fault.status, "Injected", text, path, **headers)

    async def _vanish(self, ref: str) -> bool:
        sandbox = self._find(ref)
        if sandbox is not None:
            await self._stop_all(sandbox)
            await self.backend.delete(sandbox.local_id)
            del self.sandboxes[sandbox.id]
        return sandbox is not None

    async def _create(self, body: dict[str, Any], owner: str) -> Sandbox:
        block = bool(body.get("networkBlockAll"))
        env = {str(k): str(v) for k, v in (body.get("env") or {}).items()}
        local_id = await self.backend.create(env=env, network=not block)
        sandbox_id = str(uuid.uuid4())
        sandbox = Sandbox(
            id=sandbox_id,
            name=str(body.get("name") or sandbox_id),
            local_id=local_id,
            env=env,
            labels=dict(body.get("labels") or {}),
            network_block_all=block,
            auto_stop_interval=int(body.get("autoStopInterval") or 15),
            target=str(body.get("target") or "us"),
            owner=owner,
        )
        self.sandboxes[sandbox.id] = sandbox
        return sandbox

    async def _stop_all(self, sandbox: Sandbox) -> None:
        for commands in sandbox.sessions.values():
            await self._kill(commands)
        sandbox.sessions.clear()

    async def _kill(self, commands: dict[str, Command]) -> None:
        for command in commands.values():
            if command.task is not None and not command.task.done():
                command.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await command.task

    async def _execute(self, command: Command, sandbox: Sandbox, env: dict[str, str]) -> None:
        exit_code = 137
        try:
            events = self.backend.stream(
                sandbox.local_id, [command.command], cwd=ROOT, env=env, timeout_s=3600.0
            )
            async with contextlib.aclosing(events):
                async for event in events:
                    if event.type == "exit":
                        assert event.result is not None
                        exit_code = event.result.exit_code
                    elif event.data:
                        prefix = STDOUT if event.type == "stdout" else STDERR
                        async with command.changed:
                            command.output.append((prefix, event.data.encode()))
                            command.changed.notify_all()
        finally:
            async with command.changed:
                command.exit_code = exit_code
                command.changed.notify_all()

    # ------------------------------------------------------------------ the app

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: FastAPI) -> AsyncIterator[None]:
        yield
        for sandbox in self.sandboxes.values():
            await self._stop_all(sandbox)
        await self.backend.close()

    def app(self) -> FastAPI:
        app = FastAPI(lifespan=self.lifespan)

        @app.middleware("http")
        async def _auth_and_faults(request: Request, call_next: Any) -> Response:
            path = request.url.path
            if path.startswith("/_fake") or path in ("/", "/api", "/api/"):
                return await call_next(request)  # type: ignore[no-any-return]
            key = _key(request.headers)
            raw = await request.body()
            body = None
            if request.headers.get("content-type", "").startswith("application/json") and raw:
                with contextlib.suppress(ValueError):
                    body = json.loads(raw)
            self._record(request.method, path, dict(request.query_params), key, body)
            if not key or key in self.reject_keys:
                return _error(401, "Unauthorized", "Invalid API key", path)
            fault = self._fault(path)
            if fault is not None:
                return fault
            return await call_next(request)  # type: ignore[no-any-return]

        def toolbox_url(request: Request) -> str:
            return f"{request.url.scheme}://{request.url.netloc}/toolbox"

        def missing(request: Request) -> JSONResponse:
            return _error(404, "Not Found", "Sandbox not found", request.url.path)

        @app.get("/")
        async def root() -> Response:
            return JSONResponse({"fake": "daytona"})

        @app.post("/api/sandbox")
        async def create(request: Request) -> Response:
            sandbox = await self._create(await request.json(), _key(request.headers))
            payload = sandbox.payload(toolbox_url(request))
            await self.events.emit("sandbox.created", payload, room=sandbox.owner)
            return JSONResponse(payload)

        @app.get("/api/sandbox")
        async def list_sandboxes(request: Request, limit: int = 100) -> Response:
            items = [s.payload(toolbox_url(request)) for s in self.sandboxes.values()]
            return JSONResponse({"items": items[:limit], "nextCursor": None})

        @app.get("/api/sandbox/{ref}")
        async def get(ref: str, request: Request) -> Response:
            sandbox = self._find(ref)
            if sandbox is None:
                return missing(request)
            return JSONResponse(sandbox.payload(toolbox_url(request)))

        @app.delete("/api/sandbox/{ref}")
        async def delete(ref: str, request: Request) -> Response:
            sandbox = self._find(ref)
            if sandbox is None:
                return missing(request)
            await self._stop_all(sandbox)
            await self.backend.delete(sandbox.local_id)
            del self.sandboxes[sandbox.id]
            await self._moved(sandbox, "destroyed", toolbox_url(request))
            return JSONResponse(sandbox.payload(toolbox_url(request)))

        @app.post("/api/sandbox/{ref}/stop")
        async def stop(ref: str, request: Request) -> Response:
            sandbox = self._find(ref)
            if sandbox is None:
                return missing(request)
            if sandbox.state == "started":
                await self._stop_all(sandbox)
                await self.backend.suspend(sandbox.local_id)
                await self._moved(sandbox, "stopped", toolbox_url(request))
            return JSONResponse(sandbox.payload(toolbox_url(request)))

        @app.post("/api/sandbox/{ref}/start")
        async def start(ref: str, request: Request) -> Response:
            sandbox = self._find(ref)
            if sandbox is None:
                return missing(request)
            if sandbox.state != "started":
                await self._moved(sandbox, "started", toolbox_url(request))
            return JSONResponse(sandbox.payload(toolbox_url(request)))

        @app.get("/api/sandbox/{ref}/toolbox-proxy-url")
        async def proxy_url(ref: str, request: Request) -> Response:
            if self._find(ref) is None:
                return missing(request)
            return JSONResponse({"url": toolbox_url(request)})

        # -------------------------------------------------------------- toolbox (HTTP)

        def running(ref: str, request: Request) -> Sandbox | JSONResponse:
            sandbox = self.sandboxes.get(ref)
            if sandbox is None:
                return missing(request)
            if sandbox.state != "started":
                text = f"Sandbox {ref} is {sandbox.state}; start it first"
                return _error(409, "Conflict", text, request.url.path)
            return sandbox

        @app.get("/toolbox/{ref}/work-dir")
        async def work_dir(ref: str, request: Request) -> Response:
            found = running(ref, request)
            return found if isinstance(found, Response) else JSONResponse({"dir": ROOT})

        @app.post("/toolbox/{ref}/process/session")
        async def new_session(ref: str, request: Request) -> Response:
            found = running(ref, request)
            if isinstance(found, Response):
                return found
            session_id = str((await request.json()).get("sessionId") or "")
            if not session_id or session_id in found.sessions:
                text = f"session {session_id!r} is empty or exists"
                return _error(409, "Conflict", text, request.url.path)
            found.sessions[session_id] = {}
            return Response(status_code=201)

        @app.delete("/toolbox/{ref}/process/session/{session_id}")
        async def end_session(ref: str, session_id: str, request: Request) -> Response:
            found = running(ref, request)
            if isinstance(found, Response):
                return found
            commands = found.sessions.pop(session_id, None)
            if commands is None:
                return _error(404, "Not Found", "session not found", request.url.path)
            await self._kill(commands)
            return Response(status_code=204)

        @app.post("/toolbox/{ref}/process/session/{session_id}/exec")
        async def session_exec(ref: str, session_id: str, request: Request) -> Response:
            found = running(ref, request)
            if isinstance(found, Response):
                return found
            commands = found.sessions.get(session_id)
            if commands is None:
                return _error(404, "Not Found", "session not found", request.url.path)
            body = await request.json()
            command = Command(id=str(uuid.uuid4()), command=str(body.get("command") or ""))
            commands[command.id] = command
            command.task = asyncio.create_task(self._execute(command, found, found.env))
            if body.get("runAsync") or body.get("async"):
                return JSONResponse({"cmdId": command.id}, 202)
            await asyncio.shield(command.task)
            out = b"".join(d for p, d in command.output if p == STDOUT).decode(errors="replace")
            err = b"".join(d for p, d in command.output if p == STDERR).decode(errors="replace")
            return JSONResponse(
                {"cmdId": command.id, "exitCode": command.exit_code, "output": out + err,
                 "stdout": out, "stderr": err}
            )  # fmt: skip

        @app.get("/toolbox/{ref}/process/session/{session_id}/command/{cmd_id}")
        async def session_command(
            ref: str, session_id: str, cmd_id: str, request: Request
        ) -> Response:
            found = running(ref, request)
            if isinstance(found, Response):
                return found
            command = found.sessions.get(session_id, {}).get(cmd_id)
            if command is None:
                return _error(404, "Not Found", "command not found", request.url.path)
            return JSONResponse(command.payload())

        @app.post("/toolbox/{ref}/process/execute")
        async def execute(ref: str, request: Request) -> Response:
            found = running(ref, request)
            if isinstance(found, Response):
                return found
            body = await request.json()
            events = self.backend.stream(
                found.local_id,
                [str(body["command"])],
                cwd=str(body.get("cwd") or ROOT),
                env={**found.env, **(body.get("envs") or {})},
                timeout_s=float(body.get("timeout") or 3600),
            )
            text, exit_code = [], -1
            async with contextlib.aclosing(events):
                async for event in events:
                    if event.type == "exit" and event.result is not None:
                        exit_code = event.result.exit_code
                    else:
                        text.append(event.data)
            return JSONResponse({"exitCode": exit_code, "result": "".join(text)})

        @app.post("/toolbox/{ref}/files/bulk-upload")
        async def upload(ref: str, request: Request) -> Response:
            found = running(ref, request)
            if isinstance(found, Response):
                return found
            form = await request.form()
            for name, value in form.multi_items():
                if not (name.endswith(".file") and isinstance(value, UploadFile)):
                    continue
                target = str(form.get(name[: -len(".file")] + ".path") or value.filename)
                try:
                    await self.backend.write(found.local_id, target, await value.read())
                except PathOutside as exc:
                    return _error(400, "Bad Request", str(exc), request.url.path)
            return Response(status_code=200)

        @app.post("/toolbox/{ref}/files/bulk-download")
        async def download(ref: str, request: Request) -> Response:
            found = running(ref, request)
            if isinstance(found, Response):
                return found
            boundary = secrets.token_hex(16)
            parts: list[bytes] = []
            for path in (await request.json()).get("paths") or []:
                try:
                    data = await self.backend.read(found.local_id, str(path))
                    part = ("file", "application/octet-stream", data)
                except Exception as exc:  # missing, outside the root, a directory
                    status, code = (
                        (400, "INVALID_FILE_PATH")
                        if isinstance(exc, PathOutside)
                        else (404, "FILE_NOT_FOUND")
                    )
                    error = {"message": f"{path}: {exc or 'not found'}", "statusCode": status,
                             "code": code, "source": DAEMON}  # fmt: skip
                    part = ("error", "application/json", json.dumps(error).encode())
                head = (
                    f'--{boundary}\r\nContent-Disposition: form-data; name="{part[0]}"; '
                    f'filename="{path}"\r\nContent-Type: {part[1]}\r\n\r\n'
                )
                parts.append(head.encode() + part[2] + b"\r\n")
            body = b"".join(parts) + f"--{boundary}--\r\n".encode()
            return Response(body, media_type=f"multipart/form-data; boundary={boundary}")

        # -------------------------------------------------------------- toolbox (WS)

        async def accept(websocket: WebSocket, ref: str) -> Sandbox | None:
            """Record and authorise a WebSocket request; None when it was refused."""
            path = websocket.url.path
            key = _key(websocket.headers)
            self._record("WS", path, dict(websocket.query_params), key, None)
            sandbox = self.sandboxes.get(ref)
            if not key or key in self.reject_keys or sandbox is None or self._fault(path):
                await websocket.close(code=1008, reason="refused")
                return None
            await websocket.accept()
            return sandbox

        @app.websocket("/toolbox/{ref}/process/session/{session_id}/command/{cmd_id}/logs")
        async def logs(websocket: WebSocket, ref: str, session_id: str, cmd_id: str) -> None:
            sandbox = await accept(websocket, ref)
            if sandbox is None:
                return
            command = sandbox.sessions.get(session_id, {}).get(cmd_id)
            if command is None:
                await websocket.close(code=1011, reason="command not found")
                return
            with contextlib.suppress(Exception):  # the client may go away first
                async for frame in command.frames():
                    await websocket.send_bytes(frame)
                await websocket.close(code=1000)

        @app.websocket("/toolbox/{ref}/process/interpreter/execute")
        async def interpreter(websocket: WebSocket, ref: str) -> None:
            sandbox = await accept(websocket, ref)
            if sandbox is None:
                return
            request = json.loads(await websocket.receive_text())
            timeout_s = float(request.get("timeout") or 600)
            events = self.backend.python(
                sandbox.local_id,
                str(request.get("code") or ""),
                env={**sandbox.env, **(request.get("envs") or {})},
                timeout_s=timeout_s,
            )
            close = 1000
            try:
                async with contextlib.aclosing(events):
                    async for event in events:
                        if event.type != "exit":
                            await websocket.send_text(
                                json.dumps({"type": event.type, "text": event.data})
                            )
                            continue
                        result = event.result
                        assert result is not None
                        if result.timed_out:
                            close = INTERPRETER_TIMEOUT_CLOSE
                        elif result.error:
                            last = result.error.strip().splitlines()[-1]
                            name, _, value = last.partition(": ")
                            await websocket.send_text(json.dumps(
                                {"type": "error", "name": name, "value": value,
                                 "traceback": result.error}
                            ))  # fmt: skip
                await websocket.close(code=close, reason="" if close == 1000 else "timeout")
            except Exception:  # the client went away: the run was stopped by aclosing
                return

        self.add_control_routes(app, self._vanish)
        return app


def main() -> None:
    args = fake_arguments("A fake Daytona API that runs commands in local sandboxes.")
    fake = FakeDaytona(tuple(args.reject_key))
    app = socketio.ASGIApp(fake.events, other_asgi_app=fake.app(), socketio_path="api/socket.io")
    serve_fake(app, args.host, args.port, lambda url: f"{ENV_NAME}={url}/api")


if __name__ == "__main__":
    main()
