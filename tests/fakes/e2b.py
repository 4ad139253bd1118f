"""A fake E2B: the control plane and the in-sandbox daemons on one loopback HTTP server.

Driven by the unmodified official SDKs (``e2b``, ``e2b-code-interpreter``) with two
settings and nothing else: the API URL (``api_url`` / ``E2B_API_URL``) and the sandbox
URL (``sandbox_url`` / ``E2B_SANDBOX_URL``). With a sandbox URL the SDK sends every
in-sandbox request to that one origin and names the target in headers, exactly as it
does through E2B's own routing proxy (``https://sandbox.e2b.app``): ``E2b-Sandbox-Id``
and ``E2b-Sandbox-Port`` (49983 envd, 49999 code interpreter). No TLS, no wildcard DNS
and no debug mode (which skips kills and pins envd to localhost:49983) are needed.

Wire protocol served (see ``../shared/PROVIDERS.md`` beside the project root):

    control plane, header X-API-KEY, errors {"code": int, "message": str}
      POST   /v2/sandboxes                 201 {sandboxID, templateID, clientID, envdVersion,
                                                 envdAccessToken, domain}
      GET    /v2/sandboxes?state=&metadata= 200 [ListedSandbox]
      GET    /sandboxes/{id}               200 SandboxDetail (state running | paused)
      DELETE /sandboxes/{id}               204, 404 when gone
      POST   /sandboxes/{id}/timeout       204 {timeout}
      POST   /sandboxes/{id}/pause         204, 409 when already paused
      POST   /v2/sandboxes/{id}/connect    201 resumed | 200 running, body as create
    envd (port 49983), header X-Access-Token
      GET  /health                         204
      GET  /files?path=P                   raw bytes; 404 JSON when missing
      POST /files?path=P                   octet-stream or multipart field "file" -> [EntryInfo]
      POST /process.Process/Start          Connect server stream, JSON codec (envelopes)
      POST /process.Process/SendSignal     Connect unary, JSON
      POST /filesystem.Filesystem/Remove   Connect unary, JSON
    code interpreter (port 49999)
      POST /contexts, GET /contexts, DELETE /contexts/{id}, POST /contexts/{id}/restart
      POST /execute {code, context_id, language, env_vars} -> NDJSON stdout/stderr/error/
           end_of_execution lines
    test controls (not E2B's): GET/DELETE /_fake/requests (what the fake received),
      POST /_fake/rate-limit {"count", "retry_after"} (the next `count` control-plane
      calls answer 429 with Retry-After), POST /_fake/reject-key {"key"} (revoke a key).

Everything runs for real: each sandbox is a ``local`` Cerver sandbox (bubblewrap where
present), commands run through its shell, Python contexts share its persistent
interpreter with one namespace per context. E2B's home ``/home/user`` maps to the
sandbox workspace.

    python -m tests.fakes.e2b --port N [--reject-key K ...]

prints one line, ``CERVER_E2B_API_URL=<url> CERVER_E2B_SANDBOX_URL=<url>``, and serves
until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime as dt
import email.parser
import email.policy
import json
import posixpath
import secrets
import select
import shlex
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from cerver.adapters.base import ExecRequest, SandboxRecord, SandboxSpec
from cerver.adapters.local import LocalAdapter
from cerver.config import Settings, prepare_home
from cerver.errors import CerverError, NotFound

HOME = "/home/user"
ENVD_VERSION = "0.5.7"  # octet-stream uploads, no per-request username
ENVD_PORT, JUPYTER_PORT = "49983", "49999"
DEFAULT_TIMEOUT_S = 300
END_STREAM = 0x02


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat().replace("+00:00", "Z")


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"code": status, "message": message}, status, headers=headers)


def _connect_error(code: str, message: str, status: int) -> JSONResponse:
    return JSONResponse({"code": code, "message": message}, status)


def _envelope(message: dict[str, Any], flags: int = 0) -> bytes:
    data = json.dumps(message).encode()
    return struct.pack(">BI", flags, len(data)) + data


@dataclass
class FakeSandbox:
    sandbox_id: str
    template_id: str
    record: SandboxRecord
    envd_token: str
    metadata: dict[str, str]
    env_vars: dict[str, str]
    timeout_s: int
    auto_pause: bool
    started_at: float = field(default_factory=time.time)
    end_at: float = 0.0
    state: str = "running"
    contexts: dict[str, dict[str, str]] = field(default_factory=dict)
    procs: dict[int, asyncio.Task[None]] = field(default_factory=dict)

    def api_body(self) -> dict[str, Any]:
        return {
            "sandboxID": self.sandbox_id,
            "templateID": self.template_id,
            "clientID": "fake-client",
            "envdVersion": ENVD_VERSION,
            "envdAccessToken": self.envd_token,
            "domain": None,
        }


def _relative(path: str) -> str:
    """E2B paths are absolute under /home/user (or relative to it); the workspace is home."""
    if path.startswith("/"):
        norm = posixpath.normpath(path)
        if norm == HOME:
            return ""
        if not norm.startswith(HOME + "/"):
            raise CerverError(f"path {path!r} is outside {HOME} in this fake")
        return norm[len(HOME) + 1 :]
    return path


class FakeE2B:
    def __init__(
        self, home: Path, reject_keys: list[str] | None = None, *, own_home: bool = False
    ) -> None:
        self._home, self._own_home = home, own_home
        self.settings = Settings(
            home=home, database_url=f"sqlite:///{home / 'fake.db'}", max_run_timeout_s=3600.0
        )
        prepare_home(self.settings)
        self.local = LocalAdapter(self.settings)
        self.reject_keys = set(reject_keys or ())
        self.sandboxes: dict[str, FakeSandbox] = {}
        self.received: list[dict[str, Any]] = []
        self.rate_limit = {"count": 0, "retry_after": 1}
        self._next_pid = 1000
        self.app = Starlette(routes=self._routes(), lifespan=self._lifespan)

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        """On shutdown (SIGTERM included), every sandbox and its processes go."""
        try:
            yield
        finally:
            for sb in list(self.sandboxes.values()):
                await self._destroy(sb)
            self.sandboxes.clear()
            await self.local.close()
            if self._own_home:
                shutil.rmtree(self._home, ignore_errors=True)

    def _routes(self) -> list[Route]:
        return [
            Route("/v2/sandboxes", self.create, methods=["POST"]),
            Route("/v2/sandboxes", self.list, methods=["GET"]),
            Route("/sandboxes/{sid}", self.get, methods=["GET"]),
            Route("/sandboxes/{sid}", self.kill, methods=["DELETE"]),
            Route("/sandboxes/{sid}/timeout", self.set_timeout, methods=["POST"]),
            Route("/sandboxes/{sid}/pause", self.pause, methods=["POST"]),
            Route("/v2/sandboxes/{sid}/connect", self.connect, methods=["POST"]),
            Route("/health", self.health, methods=["GET"]),
            Route("/files", self.read_file, methods=["GET"]),
            Route("/files", self.write_file, methods=["POST"]),
            Route("/process.Process/Start", self.start_process, methods=["POST"]),
            Route("/process.Process/SendSignal", self.send_signal, methods=["POST"]),
            Route("/filesystem.Filesystem/Remove", self.remove_path, methods=["POST"]),
            Route("/contexts", self.create_context, methods=["POST"]),
            Route("/contexts", self.list_contexts, methods=["GET"]),
            Route("/contexts/{cid}", self.remove_context, methods=["DELETE"]),
            Route("/contexts/{cid}/restart", self.restart_context, methods=["POST"]),
            Route("/execute", self.execute, methods=["POST"]),
            Route("/_fake/requests", self.requests, methods=["GET", "DELETE"]),
            Route("/_fake/rate-limit", self.set_rate_limit, methods=["POST"]),
            Route("/_fake/reject-key", self.add_rejected_key, methods=["POST"]),
        ]

    # ------------------------------------------------------------------ bookkeeping

    def _note(self, request: Request) -> None:
        h = request.headers
        self.received.append({
            "method": request.method,
            "path": request.url.path,
            "api_key": h.get("x-api-key"),
            "access_token": h.get("x-access-token"),
            "sandbox_id": h.get("e2b-sandbox-id"),
            "port": h.get("e2b-sandbox-port"),
            "user_agent": h.get("user-agent"),
        })  # fmt: skip

    async def requests(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.received.clear()
            return Response(status_code=204)
        return JSONResponse(self.received)

    async def set_rate_limit(self, request: Request) -> Response:
        body = await request.json()
        self.rate_limit = {"count": int(body["count"]), "retry_after": int(body["retry_after"])}
        return Response(status_code=204)

    async def add_rejected_key(self, request: Request) -> Response:
        """Revoke a key from now on, as deleting it in E2B's dashboard does."""
        self.reject_keys.add(str((await request.json())["key"]))
        return Response(status_code=204)

    def _api(self, request: Request) -> Response | None:
        """Control-plane checks, in E2B's order: the key, then the rate limit."""
        self._note(request)
        self._expire()
        key = request.headers.get("x-api-key", "")
        if not key or key in self.reject_keys:
            return _error(401, "Invalid API key, please visit https://e2b.dev/docs/api-key")
        if self.rate_limit["count"] > 0:
            self.rate_limit["count"] -= 1
            retry = str(self.rate_limit["retry_after"])
            return _error(429, "Rate limit exceeded", headers={"Retry-After": retry})
        return None

    def _expire(self) -> None:
        now = time.time()
        for sb in list(self.sandboxes.values()):
            if sb.state == "running" and now >= sb.end_at:
                if sb.auto_pause:
                    sb.state = "paused"
                else:
                    self.sandboxes.pop(sb.sandbox_id, None)
                    asyncio.get_running_loop().create_task(self._destroy(sb))

    async def _destroy(self, sb: FakeSandbox) -> None:
        for task in sb.procs.values():
            task.cancel()
        with contextlib.suppress(CerverError):
            await self.local.delete_sandbox(sb.record)

    def _found(self, sid: str) -> FakeSandbox | None:
        return self.sandboxes.get(sid)

    # ------------------------------------------------------------------ control plane

    async def create(self, request: Request) -> Response:
        if (refused := self._api(request)) is not None:
            return refused
        body = await request.json()
        template = body.get("templateID")
        if not template:
            return _error(400, "templateID is required")
        timeout = int(body.get("timeout", DEFAULT_TIMEOUT_S))
        env = {str(k): str(v) for k, v in (body.get("envVars") or {}).items()}
        network = bool(body.get("allow_internet_access", True))
        record = await self.local.create_sandbox(
            SandboxSpec(account_id="e2b-fake", env=env, network=network)
        )
        sid = "i" + secrets.token_hex(10)
        sb = FakeSandbox(
            sandbox_id=sid,
            template_id=template,
            record=record,
            envd_token=secrets.token_urlsafe(24),
            metadata=dict(body.get("metadata") or {}),
            env_vars=env,
            timeout_s=timeout,
            auto_pause=bool(body.get("autoPause", False)),
        )
        sb.end_at = sb.started_at + timeout
        self.sandboxes[sid] = sb
        return JSONResponse(sb.api_body(), 201)

    async def list(self, request: Request) -> Response:
        if (refused := self._api(request)) is not None:
            return refused
        states = set((request.query_params.get("state") or "running,paused").split(","))
        wanted = dict(
            kv.split("=", 1) for kv in (request.query_params.get("metadata") or "").split("&") if kv
        )
        rows = [
            self._detail(sb)
            for sb in self.sandboxes.values()
            if sb.state in states and all(sb.metadata.get(k) == v for k, v in wanted.items())
        ]
        limit = int(request.query_params.get("limit") or 100)
        return JSONResponse(rows[:limit])  # one page: no x-next-token header

    def _detail(self, sb: FakeSandbox) -> dict[str, Any]:
        return {
            **sb.api_body(),
            "startedAt": _iso(sb.started_at),
            "endAt": _iso(sb.end_at),
            "cpuCount": 2,
            "memoryMB": 512,
            "diskSizeMB": 1024,
            "state": sb.state,
            "metadata": sb.metadata,
        }

    async def get(self, request: Request) -> Response:
        if (refused := self._api(request)) is not None:
            return refused
        sb = self._found(request.path_params["sid"])
        if sb is None:
            return _error(404, f"sandbox {request.path_params['sid']} not found")
        return JSONResponse(self._detail(sb))

    async def kill(self, request: Request) -> Response:
        if (refused := self._api(request)) is not None:
            return refused
        sb = self.sandboxes.pop(request.path_params["sid"], None)
        if sb is None:
            return _error(404, f"sandbox {request.path_params['sid']} not found")
        await self._destroy(sb)
        return Response(status_code=204)

    async def set_timeout(self, request: Request) -> Response:
        if (refused := self._api(request)) is not None:
            return refused
        sb = self._found(request.path_params["sid"])
        if sb is None:
            return _error(404, f"sandbox {request.path_params['sid']} not found")
        sb.timeout_s = int((await request.json())["timeout"])
        sb.end_at = time.time() + sb.timeout_s
        return Response(status_code=204)

    async def pause(self, request: Request) -> Response:
        """Pausing keeps memory (the interpreters keep running here, like a snapshot)."""
        if (refused := self._api(request)) is not None:
            return refused
        sb = self._found(request.path_params["sid"])
        if sb is None:
            return _error(404, f"sandbox {request.path_params['sid']} not found")
        if sb.state == "paused":
            return _error(409, f"sandbox {sb.sandbox_id} is already paused")
        sb.state = "paused"
        return Response(status_code=204)

    async def connect(self, request: Request) -> Response:
        if (refused := self._api(request)) is not None:
            return refused
        sb = self._found(request.path_params["sid"])
        if sb is None:
            return _error(404, f"sandbox {request.path_params['sid']} not found")
        body = await request.json() if await request.body() else {}
        resumed = sb.state == "paused"
        sb.state = "running"
        sb.end_at = max(sb.end_at, time.time() + int(body.get("timeout", sb.timeout_s)))
        return JSONResponse(sb.api_body(), 201 if resumed else 200)

    # ------------------------------------------------------------------ envd

    def _sandbox(
        self, request: Request, port: str, *, token: bool = True
    ) -> FakeSandbox | Response:
        """The routed sandbox, answered the way E2B's proxy and envd answer problems."""
        self._note(request)
        self._expire()
        sid = request.headers.get("e2b-sandbox-id", "")
        sb = self._found(sid)
        if sb is None or sb.state != "running":
            return _error(502, f"The sandbox {sid} was not found")
        if request.headers.get("e2b-sandbox-port") != port:
            return _error(502, f"The sandbox {sid} is running but port is not open")
        if token and request.headers.get("x-access-token") != sb.envd_token:
            return _connect_error("unauthenticated", "invalid access token", 401)
        return sb

    async def health(self, request: Request) -> Response:
        sb = self._sandbox(request, ENVD_PORT, token=False)
        return sb if isinstance(sb, Response) else Response(status_code=204)

    async def read_file(self, request: Request) -> Response:
        sb = self._sandbox(request, ENVD_PORT)
        if isinstance(sb, Response):
            return sb
        path = request.query_params.get("path", "")
        try:
            data = await self.local.read_file(sb.record, _relative(path))
        except NotFound:
            return _error(404, f"path '{path}' does not exist")
        except CerverError as exc:
            return _error(400, exc.message)
        return Response(data, media_type="application/octet-stream")

    async def write_file(self, request: Request) -> Response:
        sb = self._sandbox(request, ENVD_PORT)
        if isinstance(sb, Response):
            return sb
        path = request.query_params.get("path", "")
        body = await request.body()
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("multipart/form-data"):
            message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                f"Content-Type: {ctype}\r\n\r\n".encode() + body
            )
            parts = [
                p
                for p in message.iter_parts()
                if p.get_param("name", header="content-disposition") == "file"
            ]
            if not parts:
                return _error(400, "multipart field 'file' is missing")
            path = path or str(parts[0].get_filename())
            body = parts[0].get_payload(decode=True) or b""
        try:
            await self.local.write_file(sb.record, _relative(path), body)
        except CerverError as exc:
            return _error(400, exc.message)
        full = posixpath.join(HOME, _relative(path))
        return JSONResponse([{"name": posixpath.basename(full), "type": "file", "path": full}])

    async def start_process(self, request: Request) -> Response:
        sb = self._sandbox(request, ENVD_PORT)
        if isinstance(sb, Response):
            return sb
        raw = await request.body()
        if request.headers.get("content-type") != "application/connect+json" or len(raw) < 5:
            return _connect_error("invalid_argument", "expected one connect+json envelope", 400)
        _, length = struct.unpack(">BI", raw[:5])
        proc = json.loads(raw[5 : 5 + length]).get("process", {})
        cmd = shlex.join([proc.get("cmd", "/bin/bash"), *proc.get("args", [])])
        timeout_ms = request.headers.get("connect-timeout-ms")
        timeout_s = int(timeout_ms) / 1000 if timeout_ms else self.settings.max_run_timeout_s
        try:
            cwd = _relative(proc["cwd"]) if proc.get("cwd") else None
        except CerverError as exc:
            return _connect_error("invalid_argument", exc.message, 400)
        run = ExecRequest(code=cmd, timeout_s=timeout_s, env=proc.get("envs") or {}, cwd=cwd)
        self._next_pid += 1
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        task = asyncio.create_task(self._pump_process(sb, run, queue))
        sb.procs[self._next_pid] = task
        return StreamingResponse(
            self._process_stream(sb, self._next_pid, task, queue),
            media_type="application/connect+json",
        )

    async def _pump_process(
        self, sb: FakeSandbox, run: ExecRequest, queue: asyncio.Queue[bytes | None]
    ) -> None:
        def event(payload: dict[str, Any]) -> bytes:
            return _envelope({"event": payload})

        try:
            async for ev in self.local.run_stream(sb.record, run):
                if ev.type in ("stdout", "stderr"):
                    data = base64.b64encode(ev.data.encode()).decode()
                    await queue.put(event({"data": {ev.type: data}}))
                elif ev.result is not None:
                    end: dict[str, Any] = {"exited": not ev.result.timed_out}
                    end["status"] = (
                        "signal: killed"
                        if ev.result.timed_out
                        else (f"exit status {ev.result.exit_code}")
                    )
                    if ev.result.exit_code:
                        end["exitCode"] = ev.result.exit_code
                    await queue.put(event({"end": end}))
            await queue.put(_envelope({}, END_STREAM))
        except asyncio.CancelledError:
            await queue.put(event({"end": {"exitCode": -1, "status": "signal: killed"}}))
            await queue.put(_envelope({}, END_STREAM))
            raise
        except CerverError as exc:
            error = {"code": "invalid_argument", "message": exc.message}
            await queue.put(_envelope({"error": error}, END_STREAM))
        finally:
            await queue.put(None)

    async def _process_stream(
        self,
        sb: FakeSandbox,
        pid: int,
        task: asyncio.Task[None],
        queue: asyncio.Queue[bytes | None],
    ) -> AsyncIterator[bytes]:
        try:
            yield _envelope({"event": {"start": {"pid": pid}}})
            while (chunk := await queue.get()) is not None:
                yield chunk
        finally:  # the client went away: the command does not outlive its stream here
            sb.procs.pop(pid, None)
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def send_signal(self, request: Request) -> Response:
        sb = self._sandbox(request, ENVD_PORT)
        if isinstance(sb, Response):
            return sb
        body = await request.json()
        pid = int(body.get("process", {}).get("pid", 0))
        task = sb.procs.get(pid)
        if task is None:
            return _connect_error("not_found", f"process with pid {pid} not found", 404)
        task.cancel()
        return JSONResponse({})

    async def remove_path(self, request: Request) -> Response:
        """Connect unary; the contract has no delete, so the sandbox's own shell removes."""
        sb = self._sandbox(request, ENVD_PORT)
        if isinstance(sb, Response):
            return sb
        path = (await request.json()).get("path", "")
        try:
            rel = _relative(path)
        except CerverError as exc:
            return _connect_error("invalid_argument", exc.message, 400)
        if not rel:
            return _connect_error("invalid_argument", "refusing to remove the home directory", 400)
        check = ExecRequest(code=f"test -e {shlex.quote(rel)} && rm -rf -- {shlex.quote(rel)}")
        if (await self.local.run(sb.record, check)).exit_code != 0:
            return _connect_error("not_found", f"path '{path}' does not exist", 404)
        return JSONResponse({})

    # ------------------------------------------------------------------ code interpreter

    async def create_context(self, request: Request) -> Response:
        sb = self._sandbox(request, JUPYTER_PORT, token=False)
        if isinstance(sb, Response):
            return sb
        body = await request.json() if await request.body() else {}
        language = body.get("language") or "python"
        if language != "python":
            return _error(400, f"language {language!r} is not supported by this fake")
        context = {"id": secrets.token_hex(8), "language": language, "cwd": body.get("cwd") or HOME}
        sb.contexts[context["id"]] = context
        return JSONResponse(context)

    async def list_contexts(self, request: Request) -> Response:
        sb = self._sandbox(request, JUPYTER_PORT, token=False)
        return sb if isinstance(sb, Response) else JSONResponse(list(sb.contexts.values()))

    async def remove_context(self, request: Request) -> Response:
        sb = self._sandbox(request, JUPYTER_PORT, token=False)
        if isinstance(sb, Response):
            return sb
        if sb.contexts.pop(request.path_params["cid"], None) is None:
            return _error(404, "context not found")
        await self._forget_namespace(sb, request.path_params["cid"])
        return Response(status_code=204)

    async def restart_context(self, request: Request) -> Response:
        sb = self._sandbox(request, JUPYTER_PORT, token=False)
        if isinstance(sb, Response):
            return sb
        if request.path_params["cid"] not in sb.contexts:
            return _error(404, "context not found")
        await self._forget_namespace(sb, request.path_params["cid"])
        return Response(status_code=204)

    async def _forget_namespace(self, sb: FakeSandbox, cid: str) -> None:
        code = f"globals().setdefault('_e2b_contexts', {{}}).pop({cid!r}, None)"
        await self.local.run(sb.record, ExecRequest(code=code, language="python", timeout_s=10))

    async def execute(self, request: Request) -> Response:
        sb = self._sandbox(request, JUPYTER_PORT)
        if isinstance(sb, Response):
            return sb
        body = await request.json()
        cid = body.get("context_id") or "default"
        if cid != "default" and cid not in sb.contexts:
            return _error(404, f"context {cid} not found")
        wrapped = (
            "exec(compile({code!r}, '<cell>', 'exec'), globals().setdefault('_e2b_contexts', {{}})"
            ".setdefault({cid!r}, {{'__name__': '__main__'}}))"
        ).format(code=body.get("code", ""), cid=cid)
        run = ExecRequest(
            code=wrapped, language="python", timeout_s=self.settings.max_run_timeout_s,
            env={str(k): str(v) for k, v in (body.get("env_vars") or {}).items()},
        )  # fmt: skip
        return StreamingResponse(self._execute_lines(sb, run), media_type="application/x-ndjson")

    async def _execute_lines(self, sb: FakeSandbox, run: ExecRequest) -> AsyncIterator[bytes]:
        def line(payload: dict[str, Any]) -> bytes:
            return json.dumps(payload).encode() + b"\n"

        stderr = ""  # held back: a traceback is an `error` line, not stderr, in Jupyter
        async with contextlib.aclosing(self.local.run_stream(sb.record, run)) as events:
            async for ev in events:
                if ev.type == "stdout":
                    yield line({"type": "stdout", "text": ev.data, "timestamp": time.time_ns()})
                elif ev.type == "stderr":
                    stderr += ev.data
                elif ev.result is not None:
                    error = ev.result.error
                    if error and stderr.endswith(error):
                        stderr = stderr[: -len(error)]
                    if stderr:
                        yield line({"type": "stderr", "text": stderr, "timestamp": time.time_ns()})
                    if error:
                        last = error.strip().splitlines()[-1]
                        name, _, value = last.partition(": ")
                        yield line(
                            {"type": "error", "name": name, "value": value, "traceback": error}
                        )
        yield line({"type": "end_of_execution"})


async def _serve(fake: FakeE2B, host: str, port: int) -> None:
    """Print the settings line once the socket listens."""
    config = uvicorn.Config(fake.app, host=host, port=port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started and not serving.done():
        await asyncio.sleep(0.02)
    if server.started:
        url = f"http://{host}:{port}"
        print(f"CERVER_E2B_API_URL={url} CERVER_E2B_SANDBOX_URL={url}", flush=True)
    await serving


@dataclass
class FakeProcess:
    """A fake E2B running as a subprocess (for tests): its URL and settings line."""

    url: str
    env: dict[str, str]
    proc: subprocess.Popen[str]

    def received(self) -> list[dict[str, Any]]:
        return list(httpx.get(f"{self.url}/_fake/requests", timeout=10).json())

    def reject(self, key: str) -> None:
        httpx.post(f"{self.url}/_fake/reject-key", json={"key": key}, timeout=10).raise_for_status()

    def rate_limit(self, count: int, retry_after: int = 0) -> None:
        body = {"count": count, "retry_after": retry_after}
        httpx.post(f"{self.url}/_fake/rate-limit", json=body, timeout=10).raise_for_status()


@contextlib.contextmanager
def running(*args: str, start_timeout_s: float = 60.0) -> Iterator[FakeProcess]:
    """Start ``python -m tests.fakes.e2b`` on a free loopback port; stop it afterwards."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.e2b", "--port", str(port), *args],
        cwd=root, stdout=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], start_timeout_s)
        line = proc.stdout.readline() if ready else ""
        if not line.startswith("CERVER_E2B_API_URL="):
            raise RuntimeError(f"the fake E2B did not start (said {line!r})")
        env = dict(token.split("=", 1) for token in line.split())
        yield FakeProcess(url=env["CERVER_E2B_API_URL"], env=env, proc=proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description="A fake E2B on loopback (tests/fakes/e2b.py).")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--reject-key", action="append", default=[], help="refuse this API key with 401"
    )
    parser.add_argument("--home", default=None, help="where sandboxes live (default: a temp dir)")
    args = parser.parse_args()
    home = Path(args.home or tempfile.mkdtemp(prefix="e2b-fake-", dir="/tmp"))
    home.chmod(0o711)  # sandbox uids traverse to their workspace
    fake = FakeE2B(home, reject_keys=args.reject_key, own_home=args.home is None)
    asyncio.run(_serve(fake, args.host, args.port))


if __name__ == "__main__":
    main()
