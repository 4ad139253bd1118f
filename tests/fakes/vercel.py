"""A fake Vercel Sandbox API: the v2/v3 REST protocol the official ``vercel-sandbox`` SDK
(0.10) speaks, over real HTTP, executing commands for real in local sandboxes.

    python -m tests.fakes.vercel --port N [--reject-key K]
    -> CERVER_VERCEL_API_URL=http://127.0.0.1:N

Protocol (base URL as given to the SDK; ``Authorization: Bearer <token>``, ``?teamId=``):

    POST   v3/sandboxes                          {projectId, name?, env?, timeout(ms)?, ...}
                                                 -> {sandbox, session, routes}
    GET    v2/sandboxes?project=&limit=          -> {sandboxes, pagination}
    GET    v2/sandboxes/{name}?projectId=&resume= -> {sandbox, session, routes}
    DELETE v2/sandboxes/{name}?projectId=        -> {sandbox}
    GET    v2/sandboxes/sessions/{sid}           -> {session}
    POST   v2/sandboxes/sessions/{sid}/stop      -> {session, sandbox}
    POST   v2/sandboxes/sessions/{sid}/extend-timeout {duration(ms)} -> {session}
    POST   v2/sandboxes/sessions/{sid}/cmd       {command, args, cwd, env, timeout(ms)}
           ?wait=true&logs=true -> NDJSON: {"command": {... exitCode: null}}, then
           {"stream": "stdout"|"stderr", "data": text}..., then {"command": {... exitCode: N}}
           otherwise -> {"command": {...}}
    GET    v2/sandboxes/sessions/{sid}/cmd/{cid}?wait=     -> {"command": {...}}
    GET    v2/sandboxes/sessions/{sid}/cmd/{cid}/logs      -> NDJSON {"stream", "data"}
    POST   v2/sandboxes/sessions/{sid}/cmd/{cid}/kill {signal} -> {"command": {...}}
    POST   v2/sandboxes/sessions/{sid}/fs/read  {path, cwd}  -> raw bytes; 404 when missing
    POST   v2/sandboxes/sessions/{sid}/fs/write  tar.gz body, header x-cwd
    POST   v2/sandboxes/sessions/{sid}/fs/mkdir {path, cwd, recursive}

Errors are ``{"error": {"code", "message"}}``; a refused token answers 403
``forbidden`` (``invalidToken: true``), as the real service does.

Test controls (not part of Vercel's API) live under ``/_fake`` (tests/fakes/_controls.py);
``GET /_fake/requests`` lists what was received: method, path, query, token, body.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import io
import json
import posixpath
import tarfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from tests.fakes._controls import Controls
from tests.fakes.local_backend import LocalBackend, PathOutside, fake_arguments, serve_fake

ROOT = "/vercel/sandbox"
ENV_NAME = "CERVER_VERCEL_API_URL"


def _ms() -> int:
    return int(time.time() * 1000)


def _error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    headers = {}
    if "retry_after" in extra:
        headers["Retry-After"] = str(extra.pop("retry_after"))
    return JSONResponse(
        {"error": {"code": code, "message": message, **extra}}, status, headers=headers
    )


def _untar(raw: bytes) -> list[tuple[str, bytes]]:
    """The regular files of a tar.gz body, as (name, bytes)."""
    files = []
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(raw)), mode="r:") as archive:
        for member in archive.getmembers():
            handle = archive.extractfile(member) if member.isfile() else None
            if handle is not None:
                files.append((member.name, handle.read()))
    return files


@dataclass
class Command:
    id: str
    session_id: str
    name: str
    args: list[str]
    cwd: str
    started_at: int = field(default_factory=_ms)
    exit_code: int | None = None
    logs: list[dict[str, str]] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    task: asyncio.Task[None] | None = None

    def payload(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "args": self.args,
            "cwd": self.cwd,
            "sessionId": self.session_id,
            "exitCode": self.exit_code,
            "startedAt": self.started_at,
        }

    def _moved_past(self, seen: int) -> Any:
        return lambda: len(self.logs) > seen or self.exit_code is not None

    async def follow(self, start: int = 0) -> AsyncIterator[dict[str, str]]:
        """Log records from ``start`` on, as they come, until the command exits."""
        seen = start
        while True:
            async with self.changed:
                await self.changed.wait_for(self._moved_past(seen))
                fresh, done = self.logs[seen:], self.exit_code is not None
            seen += len(fresh)
            for record in fresh:
                yield record
            if done and seen >= len(self.logs):
                return


@dataclass
class Session:
    id: str
    sandbox: str
    project_id: str
    timeout_ms: int
    status: str = "running"
    started_at: int = field(default_factory=_ms)
    stopped_at: int | None = None

    def payload(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "sourceSandboxName": self.sandbox,
            "projectId": self.project_id,
            "status": self.status,
            "cwd": ROOT,
            "region": "iad1",
            "memory": 4096,
            "vcpus": 2,
            "timeout": self.timeout_ms,
            "requestedAt": self.started_at,
            "startedAt": self.started_at,
            "stoppedAt": self.stopped_at,
        }


@dataclass
class Sandbox:
    name: str
    project_id: str
    local_id: str
    session_id: str
    env: dict[str, str]
    created_at: int = field(default_factory=_ms)

    def payload(self, status: str) -> dict[str, Any]:
        return {
            "name": self.name,
            "currentSessionId": self.session_id,
            "status": status,
            "persistent": True,
            "projectId": self.project_id,
            "cwd": ROOT,
            "region": "iad1",
            "memory": 4096,
            "vcpus": 2,
            "createdAt": self.created_at,
            "updatedAt": _ms(),
            "statusUpdatedAt": _ms(),
        }


class FakeVercel(Controls):
    def __init__(self, reject_keys: tuple[str, ...] = ()) -> None:
        super().__init__(reject_keys)
        self.backend = LocalBackend(ROOT)
        self.sandboxes: dict[str, Sandbox] = {}
        self.sessions: dict[str, Session] = {}
        self.commands: dict[str, Command] = {}

    # ------------------------------------------------------------------ state helpers

    def _sandbox_body(self, sandbox: Sandbox) -> dict[str, Any]:
        session = self.sessions[sandbox.session_id]
        return {"sandbox": sandbox.payload(session.status), "session": session.payload()}

    def _new_session(self, sandbox_name: str, project_id: str, timeout_ms: int) -> Session:
        session = Session(f"sbs_{uuid.uuid4().hex[:20]}", sandbox_name, project_id, timeout_ms)
        self.sessions[session.id] = session
        return session

    def _live_session(self, session_id: str) -> Session | None:
        session = self.sessions.get(session_id)
        if session is None or session.sandbox not in self.sandboxes:
            return None
        return session

    async def create(self, body: dict[str, Any]) -> JSONResponse:
        project_id = body.get("projectId")
        if not isinstance(project_id, str) or not project_id:
            return _error(400, "bad_request", "projectId is required")
        name = body.get("name") or f"sb-{uuid.uuid4().hex[:12]}"
        if name in self.sandboxes:
            return _error(409, "conflict", f"sandbox {name} already exists")
        env = dict(body.get("env") or {})
        local_id = await self.backend.create(env=env, network=True)
        session = self._new_session(name, project_id, int(body.get("timeout") or 300_000))
        sandbox = Sandbox(name, project_id, local_id, session.id, env)
        self.sandboxes[name] = sandbox
        return JSONResponse({**self._sandbox_body(sandbox), "routes": []})

    async def start_command(self, session: Session, body: dict[str, Any]) -> Command:
        sandbox = self.sandboxes[session.sandbox]
        cwd = body.get("cwd") or ROOT
        command = Command(
            id=f"cmd_{uuid.uuid4().hex[:20]}",
            session_id=session.id,
            name=str(body["command"]),
            args=[str(a) for a in body.get("args") or []],
            cwd=cwd,
        )
        self.commands[command.id] = command
        timeout_s = (body.get("timeout") or 3_600_000) / 1000.0
        env = {**sandbox.env, **(body.get("env") or {})}
        command.task = asyncio.create_task(self._execute(command, sandbox.local_id, env, timeout_s))
        return command

    async def _execute(
        self, command: Command, local_id: str, env: dict[str, str], timeout_s: float
    ) -> None:
        exit_code = 137
        try:
            events = self.backend.stream(
                local_id,
                [command.name, *command.args],
                cwd=command.cwd,
                env=env,
                timeout_s=timeout_s,
            )
            async with contextlib.aclosing(events):
                async for event in events:
                    if event.type == "exit":
                        assert event.result is not None
                        exit_code = event.result.exit_code
                        if event.result.timed_out:
                            exit_code = 124
                    elif event.data:
                        async with command.changed:
                            command.logs.append({"stream": event.type, "data": event.data})
                            command.changed.notify_all()
        except PathOutside as exc:
            async with command.changed:
                command.logs.append({"stream": "stderr", "data": f"{exc}\n"})
            exit_code = 1
        finally:
            async with command.changed:
                command.exit_code = exit_code
                command.changed.notify_all()

    # ------------------------------------------------------------------ the app

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: FastAPI) -> AsyncIterator[None]:
        yield
        for command in self.commands.values():
            if command.task is not None:
                command.task.cancel()
        await self.backend.close()

    def app(self) -> FastAPI:
        app = FastAPI(lifespan=self.lifespan)

        @app.middleware("http")
        async def _auth_and_faults(request: Request, call_next: Any) -> Response:
            if request.url.path.startswith("/_fake"):
                return await call_next(request)  # type: ignore[no-any-return]
            auth = request.headers.get("authorization", "")
            token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else ""
            body = await request.body()
            record: dict[str, Any] = {
                "method": request.method,
                "path": request.url.path,
                "query": dict(request.query_params),
                "token": token,
            }
            if request.headers.get("content-type", "").startswith("application/json") and body:
                with contextlib.suppress(ValueError):
                    record["body"] = json.loads(body)
            self.requests.append(record)
            if not token or token in self.reject_keys:
                return _error(403, "forbidden", "Not authorized", invalidToken=True)
            fault = self.take_fault(request.url.path)
            if fault is not None:
                extra = {} if fault.retry_after is None else {"retry_after": fault.retry_after}
                code = "rate_limited" if fault.status == 429 else "internal_server_error"
                return _error(fault.status, code, f"injected {fault.status}", **extra)
            return await call_next(request)  # type: ignore[no-any-return]

        @app.post("/v3/sandboxes")
        async def create(request: Request) -> Response:
            return await self.create(await request.json())

        @app.get("/v2/sandboxes")
        async def query(project: str = "", limit: int = 50) -> Response:
            found = [s for s in self.sandboxes.values() if not project or s.project_id == project]
            page = [s.payload(self.sessions[s.session_id].status) for s in found[:limit]]
            return JSONResponse(
                {"sandboxes": page, "pagination": {"count": len(page), "next": None}}
            )

        @app.get("/v2/sandboxes/{name}")
        async def get(name: str, resume: str = "false") -> Response:
            sandbox = self.sandboxes.get(name)
            if sandbox is None:
                return _error(404, "not_found", f"Sandbox {name} not found")
            session = self.sessions[sandbox.session_id]
            if resume == "true" and session.status != "running":
                fresh = self._new_session(name, sandbox.project_id, session.timeout_ms)
                sandbox.session_id = fresh.id
                return JSONResponse({**self._sandbox_body(sandbox), "routes": [], "resumed": True})
            return JSONResponse({**self._sandbox_body(sandbox), "routes": []})

        @app.delete("/v2/sandboxes/{name}")
        async def destroy(name: str) -> Response:
            sandbox = self.sandboxes.pop(name, None)
            if sandbox is None:
                return _error(404, "not_found", f"Sandbox {name} not found")
            session = self.sessions[sandbox.session_id]
            session.status, session.stopped_at = "stopped", _ms()
            await self._stop_commands(session.id)
            await self.backend.delete(sandbox.local_id)
            body = {"sandbox": sandbox.payload("stopped"), "session": session.payload()}
            return JSONResponse(body)

        @app.get("/v2/sandboxes/sessions/{sid}")
        async def get_session(sid: str) -> Response:
            session = self._live_session(sid)
            if session is None:
                return _error(404, "not_found", f"Session {sid} not found")
            return JSONResponse({"session": session.payload()})

        @app.post("/v2/sandboxes/sessions/{sid}/stop")
        async def stop(sid: str) -> Response:
            session = self._live_session(sid)
            if session is None:
                return _error(404, "not_found", f"Session {sid} not found")
            session.status, session.stopped_at = "stopped", _ms()
            await self._stop_commands(sid)
            sandbox = self.sandboxes[session.sandbox]
            return JSONResponse(
                {"session": session.payload(), "sandbox": sandbox.payload("stopped")}
            )

        @app.post("/v2/sandboxes/sessions/{sid}/extend-timeout")
        async def extend(sid: str, request: Request) -> Response:
            session = self._live_session(sid)
            if session is None:
                return _error(404, "not_found", f"Session {sid} not found")
            session.timeout_ms += int((await request.json()).get("duration") or 0)
            return JSONResponse({"session": session.payload()})

        @app.post("/v2/sandboxes/sessions/{sid}/cmd")
        async def run(sid: str, request: Request, wait: str = "", logs: str = "") -> Response:
            session = self._running(sid)
            if isinstance(session, Response):
                return session
            body = await request.json()
            if not isinstance(body.get("command"), str) or not body["command"]:
                return _error(400, "bad_request", "command is required")
            command = await self.start_command(session, body)
            if wait != "true":
                return JSONResponse({"command": command.payload()})
            return StreamingResponse(
                self._ndjson_run(command, with_logs=logs == "true"),
                media_type="application/x-ndjson",
            )

        @app.get("/v2/sandboxes/sessions/{sid}/cmd/{cid}")
        async def get_command(sid: str, cid: str, wait: str = "false") -> Response:
            command = self.commands.get(cid)
            if command is None or command.session_id != sid:
                return _error(404, "not_found", f"Command {cid} not found")
            if wait == "true":
                async with command.changed:
                    await command.changed.wait_for(lambda: command.exit_code is not None)
            return JSONResponse({"command": command.payload()})

        @app.get("/v2/sandboxes/sessions/{sid}/cmd/{cid}/logs")
        async def command_logs(sid: str, cid: str) -> Response:
            command = self.commands.get(cid)
            if command is None or command.session_id != sid:
                return _error(404, "not_found", f"Command {cid} not found")

            async def lines() -> AsyncIterator[bytes]:
                async for record in command.follow():
                    yield (json.dumps(record) + "\n").encode()

            return StreamingResponse(lines(), media_type="application/x-ndjson")

        @app.post("/v2/sandboxes/sessions/{sid}/cmd/{cid}/kill")
        async def kill(sid: str, cid: str) -> Response:
            command = self.commands.get(cid)
            if command is None or command.session_id != sid:
                return _error(404, "not_found", f"Command {cid} not found")
            await self._kill(command)
            return JSONResponse({"command": command.payload()})

        @app.post("/v2/sandboxes/sessions/{sid}/fs/read")
        async def read(sid: str, request: Request) -> Response:
            session = self._running(sid)
            if isinstance(session, Response):
                return session
            body = await request.json()
            local_id = self.sandboxes[session.sandbox].local_id
            try:
                data = await self.backend.read(local_id, body["path"], body.get("cwd"))
            except PathOutside as exc:
                return _error(400, "bad_request", str(exc))
            except Exception:  # the local adapter's not-found / not-a-file errors
                return _error(404, "file_not_found", f"File not found: {body['path']}")
            return Response(data, media_type="application/octet-stream")

        @app.post("/v2/sandboxes/sessions/{sid}/fs/write")
        async def write(sid: str, request: Request) -> Response:
            session = self._running(sid)
            if isinstance(session, Response):
                return session
            local_id = self.sandboxes[session.sandbox].local_id
            cwd = request.headers.get("x-cwd") or ROOT
            raw = await request.body()
            try:
                files = _untar(raw)
            except (OSError, tarfile.TarError) as exc:
                return _error(400, "bad_request", f"body is not a tar.gz archive: {exc}")
            for name, data in files:
                try:
                    await self.backend.write(local_id, posixpath.join(cwd, name), data)
                except PathOutside as exc:
                    return _error(403, "forbidden", str(exc))
            return JSONResponse({})

        @app.post("/v2/sandboxes/sessions/{sid}/fs/mkdir")
        async def mkdir(sid: str) -> Response:
            session = self._running(sid)
            if isinstance(session, Response):
                return session
            return JSONResponse({})

        self.add_control_routes(app, self._vanish)
        return app

    async def _vanish(self, name: str) -> bool:
        sandbox = self.sandboxes.pop(name, None)
        if sandbox is not None:
            await self._stop_commands(sandbox.session_id)
            await self.backend.delete(sandbox.local_id)
        return sandbox is not None

    def _running(self, sid: str) -> Session | Response:
        session = self._live_session(sid)
        if session is None:
            return _error(404, "not_found", f"Session {sid} not found")
        if session.status != "running":
            return _error(410, "sandbox_stopped", f"Session {sid} is {session.status}")
        return session

    async def _ndjson_run(self, command: Command, *, with_logs: bool) -> AsyncIterator[bytes]:
        yield (json.dumps({"command": command.payload()}) + "\n").encode()
        try:
            async for record in command.follow():
                if with_logs:
                    yield (json.dumps(record) + "\n").encode()
        except asyncio.CancelledError:
            # The client went away; the command keeps running, as on the real service.
            raise
        yield (json.dumps({"command": command.payload()}) + "\n").encode()

    async def _kill(self, command: Command) -> None:
        if command.task is not None and not command.task.done():
            command.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await command.task

    async def _stop_commands(self, session_id: str) -> None:
        for command in list(self.commands.values()):
            if command.session_id == session_id:
                await self._kill(command)


def main() -> None:
    args = fake_arguments("A fake Vercel Sandbox API that runs commands in local sandboxes.")
    fake = FakeVercel(tuple(args.reject_key))
    serve_fake(fake.app(), args.host, args.port, lambda url: f"{ENV_NAME}={url}")


if __name__ == "__main__":
    main()
