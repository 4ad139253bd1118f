"""The relay host: ``cerver relay`` (or ``cerver-relay``) on a machine of the user's.

Ray-free on purpose (a laptop should not need Ray): it needs pydantic, httpx, websockets and
``cerver.adapters.local``, whose sandbox it drives through the public adapter API, so a run
on a relay is confined exactly like a run on the ``local`` provider.

1. Login (first start): RFC 8628 device authorization. Prints ``User code: XXXX-XXXX`` and
   the verification URL, opens the browser if it can, polls the token endpoint at the
   interval the gateway gave (``slow_down`` adds 5 s). The credential lands in
   ``$CERVER_RELAY_HOME/credential.json`` with mode 0600; later starts reuse it and come
   back as the same compute.
2. Connection: one outbound WebSocket, ``Authorization: Bearer <credential>`` in a header;
   ``hello`` with what the host offers, then requests and stream frames (``protocol``).
   Pings both ways; a gateway silent for ``heartbeat_timeout_s`` is given up on.
3. Reconnect forever with exponential backoff and jitter (1 s doubling to 60 s). While the
   gateway is restarting (its port refuses connections, or its front door answers the
   upgrade with 502/503/504, or with its own 404 for a path no app routes yet, because the
   app behind it is not ready yet) the wait is capped at ``RESTART_POLL_S`` so the relay
   is back within seconds of the gateway. Each failed attempt prints why, and the wait.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import os
import platform
import random
import socket
import sys
import time
import webbrowser
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from cerver.relay import protocol

log = logging.getLogger("cerver.relay.agent")

VERSION = "0.1.0"
BACKOFF_START_S = 1.0
BACKOFF_MAX_S = 60.0
RESTART_POLL_S = 4.0
EXIT_REVOKED = 3


def default_home() -> Path:
    explicit = os.environ.get("CERVER_RELAY_HOME")
    if explicit:
        return Path(explicit).expanduser()
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "cerver-relay"


# --- state ----------------------------------------------------------------------------------
@dataclass
class Credential:
    gateway: str
    credential: str
    compute_id: str


def credential_path(home: Path) -> Path:
    return home / "credential.json"


def load_credential(home: Path) -> Credential | None:
    path = credential_path(home)
    if not path.exists():
        return None
    raw = json.loads(path.read_text())
    return Credential(raw["gateway"], raw["credential"], raw["compute_id"])


def save_credential(home: Path, cred: Credential) -> None:
    home.mkdir(parents=True, exist_ok=True)
    path = credential_path(home)
    tmp = path.with_suffix(".tmp")
    # Created 0600 from the start: the secret is never readable by others, not even briefly.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(cred.__dict__, f)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


# --- the host -------------------------------------------------------------------------------
@dataclass
class HostOptions:
    max_concurrent_runs: int = 4
    allow_network: bool = True


def host_info(options: HostOptions, isolation: str) -> protocol.HostInfo:
    try:
        memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)
    except (ValueError, OSError):
        memory_mb = 0
    return protocol.HostInfo(
        hostname=socket.gethostname()[:255],
        os=platform.platform()[:255],
        cpu_count=os.cpu_count() or 0,
        memory_mb=int(memory_mb),
        max_concurrent_runs=options.max_concurrent_runs,
        network_allowed=options.allow_network,
        isolation=isolation,
        version=VERSION,
    )


class Executor:
    """Runs the gateway's operations in the local sandbox, at most ``max_concurrent_runs``
    runs (and installs) at once; more wait their turn."""

    def __init__(self, home: Path, options: HostOptions) -> None:
        from cerver.adapters.local import LocalAdapter
        from cerver.config import Settings, prepare_home

        base = Settings.from_env(at_rest_keys=False)
        self.settings = base.model_copy(
            update={"home": (home / "host").resolve(), "database_url": "sqlite://"}
        )
        prepare_home(self.settings)
        self.adapter = LocalAdapter(self.settings)
        self.options = options
        self.slots = asyncio.Semaphore(options.max_concurrent_runs)
        # Sandboxes this process has served: a Python run on any other one starts a fresh
        # interpreter (the one holding its state belonged to an earlier relay process).
        self.known: set[str] = set()

    def _restarted(self, record: Any, request: Any) -> bool:
        fresh = request.language == "python" and record.sandbox_id not in self.known
        self.known.add(record.sandbox_id)
        return fresh

    def _no_network(self, what: str) -> None:
        from cerver.errors import BadRequest

        if not self.options.allow_network:
            raise BadRequest(
                f"this relay host refuses network for sandboxes ({what}); use another compute "
                "or restart the relay without --no-network",
                details={"field": "network"},
            )

    async def handle(self, op: str, body: dict[str, Any]) -> dict[str, Any]:
        from cerver.adapters.base import ExecRequest, InstallRequest, SandboxRecord, SandboxSpec

        if op == "create_sandbox":
            spec = SandboxSpec.model_validate(body["spec"])
            if spec.network:
                self._no_network("network: true")
            made = await self.adapter.create_sandbox(spec)
            self.known.add(made.sandbox_id)
            return made.model_dump(mode="json")
        record = SandboxRecord.model_validate(body["record"])
        if op == "run":
            request = ExecRequest.model_validate(body["request"])
            restarted = self._restarted(record, request)
            async with self.slots:
                result = await self.adapter.run(record, request)
            if restarted:
                result.interpreter_restarted = True
            return result.model_dump(mode="json")
        if op == "install_package":
            self._no_network("package installs")
            install = InstallRequest.model_validate(body["request"])
            async with self.slots:
                done = await self.adapter.install_package(record, install)
            return done.model_dump(mode="json")
        if op == "write_file":
            data = base64.b64decode(body["data_b64"])
            await self.adapter.write_file(record, str(body["path"]), data)
            return {}
        if op == "read_file":
            read = await self.adapter.read_file(record, str(body["path"]))
            return {"data_b64": base64.b64encode(read).decode()}
        if op == "get_state":
            return (await self.adapter.get_state(record)).model_dump(mode="json")
        if op == "set_state":
            return (await self.adapter.set_state(record, body["state"])).model_dump(mode="json")
        if op == "delete_sandbox":
            await self.adapter.delete_sandbox(record)
            return {}
        if op == "is_alive":
            return {"alive": await self.adapter.is_alive(record)}
        raise ValueError(f"unknown op {op!r}")

    async def stream(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        from cerver.adapters.base import ExecRequest, SandboxRecord

        record = SandboxRecord.model_validate(body["record"])
        request = ExecRequest.model_validate(body["request"])
        restarted = self._restarted(record, request)
        async with self.slots:
            events = self.adapter.run_stream(record, request)
            try:
                async for event in events:
                    if restarted and event.result is not None:
                        event.result.interpreter_restarted = True
                    yield event.model_dump(mode="json")
            finally:
                await events.aclose()  # type: ignore[attr-defined]

    async def close(self) -> None:
        await self.adapter.close()


def _error_of(exc: BaseException) -> tuple[int, dict[str, Any]]:
    from cerver.errors import CerverError

    if isinstance(exc, CerverError):
        return exc.status, exc.to_body()
    if isinstance(exc, ValueError | KeyError | TypeError):
        return 400, protocol.error_body("bad_request", f"invalid relay request: {exc}")
    log.exception("relay host error", exc_info=exc)
    return 500, protocol.error_body("relay_error", "the relay host failed; its log has details")


# --- login ----------------------------------------------------------------------------------
class LoginFailed(RuntimeError):
    pass


async def login(
    gateway: str, info: protocol.HostInfo, *, open_browser: bool, out: Any = sys.stdout
) -> Credential:
    async with httpx.AsyncClient(base_url=gateway, timeout=30) as client:
        started = await client.post("/v2/relay/device", json={"host": info.model_dump()})
        if started.status_code != 200:
            raise LoginFailed(f"the gateway refused the login: {started.text[:300]}")
        grant = started.json()
        print(f"User code: {grant['user_code']}", file=out)
        print(f"Approve it at {grant['verification_uri']}", file=out)
        print(f"  or: {grant['approve_with']}", file=out, flush=True)
        if open_browser:
            with contextlib.suppress(Exception):
                webbrowser.open(grant.get("verification_uri_complete") or grant["verification_uri"])
        interval = float(grant["interval"])
        deadline = time.monotonic() + float(grant["expires_in"])
        while time.monotonic() < deadline:
            await asyncio.sleep(interval)
            answer = await client.post(
                "/v2/relay/token",
                json={"device_code": grant["device_code"], "grant_type": protocol_grant()},
            )
            if answer.status_code == 200:
                body = answer.json()
                return Credential(gateway, body["access_token"], body["compute_id"])
            code = answer.json().get("error", {}).get("code")
            if code == "authorization_pending":
                continue
            if code == "slow_down":
                interval += 5.0  # RFC 8628 section 3.5
                continue
            raise LoginFailed(f"login failed ({code}): {answer.json()['error']['message']}")
        raise LoginFailed("the user code expired before it was approved; start again")


def protocol_grant() -> str:
    return "urn:ietf:params:oauth:grant-type:device_code"


# --- the connection -------------------------------------------------------------------------
def socket_url(gateway: str) -> str:
    base = gateway.rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base[len("https://") :] + "/v2/relay/connect"
    if base.startswith("http://"):
        return "ws://" + base[len("http://") :] + "/v2/relay/connect"
    raise ValueError(f"--gateway must start with http:// or https://, got {gateway!r}")


class Revoked(RuntimeError):
    """The gateway refused the credential: log in again."""


class Session:
    """One connection's life: hello, then frames until the socket closes."""

    def __init__(self, ws: Any, executor: Executor, info: protocol.HostInfo, timeout_s: float):
        self.ws, self.executor, self.info = ws, executor, info
        self.timeout_s = timeout_s
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.last_rx = time.monotonic()
        self.welcome: protocol.Welcome | None = None

    async def send(self, frame: Any) -> None:
        await self.ws.send(protocol.dump(frame))

    async def run(self, on_welcome: Any) -> None:
        await self.send(protocol.Hello(type="hello", host=self.info))
        first = protocol.parse(protocol.to_relay, await self.ws.recv(), 1 << 20)
        if not isinstance(first, protocol.Welcome):
            raise protocol.ProtocolError("expected 'welcome'")
        self.welcome = first
        on_welcome(first)
        beat = asyncio.create_task(self._heartbeat(first.heartbeat_s))
        try:
            async for raw in self.ws:
                self.last_rx = time.monotonic()
                frame = protocol.parse(protocol.to_relay, raw, 1 << 30)
                self._dispatch(frame)
        finally:
            beat.cancel()
            for task in self.tasks.values():
                task.cancel()
            await asyncio.gather(beat, *self.tasks.values(), return_exceptions=True)

    def _dispatch(self, frame: Any) -> None:
        if isinstance(frame, protocol.Ping):
            self._spawn("ping", self.send(protocol.Pong(type="pong")))
        elif isinstance(frame, protocol.Request):
            self._spawn(frame.id, self._answer(frame))
        elif isinstance(frame, protocol.Open):
            self._spawn(frame.stream_id, self._stream(frame))
        elif isinstance(frame, protocol.Cancel):
            task = self.tasks.get(frame.stream_id)
            if task is not None:
                task.cancel()

    def _spawn(self, key: str, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self.tasks[key] = task
        task.add_done_callback(lambda _t: self.tasks.pop(key, None))

    async def _answer(self, req: protocol.Request) -> None:
        try:
            body = await self.executor.handle(req.op, req.body)
            status = 200
        except Exception as exc:
            status, body = _error_of(exc)
        await self.send(protocol.Response(type="response", id=req.id, status=status, body=body))

    async def _stream(self, frame: protocol.Open) -> None:
        end = protocol.StreamEnd(type="stream_end", stream_id=frame.stream_id)
        try:
            async for event in self.executor.stream(frame.body):
                await self.send(
                    protocol.Stream(type="stream", stream_id=frame.stream_id, event=event)
                )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            end.status, end.body = _error_of(exc)
        await self.send(end)

    async def _heartbeat(self, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            if time.monotonic() - self.last_rx > self.timeout_s:
                log.warning(
                    "no heartbeat from the gateway for %.0f s; reconnecting", self.timeout_s
                )
                await self.ws.close(protocol.CLOSE_HEARTBEAT, "no heartbeat from the gateway")
                return
            await self.send(protocol.Ping(type="ping"))


async def serve_forever(
    cred: Credential,
    executor: Executor,
    info: protocol.HostInfo,
    *,
    heartbeat_timeout_s: float = 30.0,
    out: Any = sys.stdout,
) -> None:
    """Stay connected until the credential is revoked (``Revoked``) or the task is cancelled."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidHandshake

    url = socket_url(cred.gateway)
    delay = BACKOFF_START_S
    while True:
        refused = False
        try:
            async with connect(
                url,
                additional_headers={"Authorization": f"Bearer {cred.credential}"},
                max_size=None,
                ping_interval=None,  # our own ping frames, both ways
                open_timeout=10,
            ) as ws:

                def welcomed(w: protocol.Welcome) -> None:
                    nonlocal delay
                    delay = BACKOFF_START_S
                    print(f"Connected as compute {w.compute_id} (replica {w.replica})", file=out,
                          flush=True)  # fmt: skip

                with contextlib.suppress(ConnectionClosed):
                    await Session(ws, executor, info, heartbeat_timeout_s).run(welcomed)
                close = ws.close_code, ws.close_reason
                if close[0] == protocol.CLOSE_UNAUTHORIZED:
                    raise Revoked(close[1] or "the relay credential was refused")
                print(f"Disconnected ({close[0]}: {close[1] or 'no reason'})", file=out,
                      flush=True)  # fmt: skip
        except (TimeoutError, OSError, InvalidHandshake, protocol.ProtocolError) as exc:
            refused = gateway_restarting(exc)
            wait = (min(delay, RESTART_POLL_S) if refused else delay) * random.uniform(0.5, 1.0)
            why = "restarting" if refused else "unreachable"
            print(f"Gateway {why} ({_reason(exc)}); retrying in {wait:.1f} s", file=out,
                  flush=True)  # fmt: skip
        else:
            wait = delay * random.uniform(0.5, 1.0)
        await asyncio.sleep(wait)
        # Polls of a restarting gateway do not grow the backoff past their own cap: a
        # different failure right after a restart must not inherit minutes of waiting.
        delay = min(delay * 2, RESTART_POLL_S if refused else BACKOFF_MAX_S)


def _reason(exc: BaseException) -> str:
    """One short line on why a connection failed (no URL: it may carry a query)."""
    from websockets.exceptions import InvalidStatus

    if isinstance(exc, InvalidStatus):
        return f"HTTP {exc.response.status_code}"
    return type(exc).__name__ + (
        f": {exc.strerror}" if isinstance(exc, OSError) and exc.strerror else ""
    )


RESTARTING_STATUSES = frozenset({502, 503, 504})  # a front door up, the app behind it not
# What Serve's front doors (HAProxy's default backend, Serve's proxy) answer, as a 404, for
# a path no application routes yet: the gateway's app is not deployed again so far. Our
# app's own 404s are JSON errors and never say this.
NO_APP_YET = b"Ping http://.../-/routes for available routes."


def gateway_restarting(exc: BaseException) -> bool:
    """Whether a failed connection looks like a gateway restart in progress: the port
    refuses, or the front door (HAProxy, Serve's proxy) rejects the upgrade because the app
    behind it is not up yet: a 502, 503 or 504, or the front door's own 404 for a path no
    application routes yet. Any other failure backs off exponentially."""
    from websockets.exceptions import InvalidStatus

    if isinstance(exc, ConnectionRefusedError):
        return True
    if not isinstance(exc, InvalidStatus):
        return False
    response = exc.response
    if response.status_code in RESTARTING_STATUSES:
        return True
    return response.status_code == 404 and NO_APP_YET in bytes(response.body)


# --- commands -------------------------------------------------------------------------------
async def run_relay(args: argparse.Namespace) -> int:
    home = Path(args.home) if args.home else default_home()
    options = HostOptions(
        max_concurrent_runs=args.max_concurrent, allow_network=not args.no_network
    )
    executor = Executor(home, options)
    info = host_info(options, executor.settings.sandbox_isolation)
    cred = load_credential(home)
    gateway = args.gateway or (cred.gateway if cred else None)
    if not gateway:
        print("error: --gateway URL is needed for the first login", file=sys.stderr)
        return 2
    if cred is None or cred.gateway.rstrip("/") != gateway.rstrip("/"):
        try:
            cred = await login(gateway, info, open_browser=not args.no_browser)
        except (LoginFailed, httpx.HTTPError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        save_credential(home, cred)
        print(f"Logged in: this machine is compute {cred.compute_id}", flush=True)
    try:
        await serve_forever(cred, executor, info, heartbeat_timeout_s=args.heartbeat_timeout)
    except Revoked as exc:
        print(f"error: {exc}; run 'cerver relay' again to log in", file=sys.stderr)
        credential_path(home).unlink(missing_ok=True)
        return EXIT_REVOKED
    finally:
        await executor.close()
    return 0


async def logout(args: argparse.Namespace) -> int:
    home = Path(args.home) if args.home else default_home()
    cred = load_credential(home)
    if cred is None:
        print("not logged in", file=sys.stderr)
        return 1
    async with httpx.AsyncClient(base_url=cred.gateway, timeout=30) as client:
        answer = await client.post(
            "/v2/relay/logout", headers={"Authorization": f"Bearer {cred.credential}"}
        )
    credential_path(home).unlink(missing_ok=True)
    if answer.status_code == 200:
        print(f"Logged out: compute {cred.compute_id} is revoked")
        return 0
    print(f"credential removed here; the gateway said {answer.status_code}", file=sys.stderr)
    return 0 if answer.status_code == 401 else 1


async def approve(args: argparse.Namespace) -> int:
    token = os.environ.get("CERVER_API_TOKEN") or os.environ.get("CERVER_API_KEY")
    gateway = args.gateway or os.environ.get("CERVER_API_URL")
    if not token or not gateway:
        print("error: set CERVER_API_TOKEN and --gateway (or CERVER_API_URL)", file=sys.stderr)
        return 2
    async with httpx.AsyncClient(base_url=gateway, timeout=30) as client:
        answer = await client.post(
            "/v2/relay/approve",
            json={"code": args.code},
            headers={"Authorization": f"Bearer {token}"},
        )
    if answer.status_code != 200:
        print(f"error: {answer.json()['error']['message']}", file=sys.stderr)
        return 1
    print(f"Approved: compute {answer.json()['compute_id']}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cerver relay", description="Serve this machine as a private compute of your account."
    )
    p.add_argument("--gateway", help="the Cerver gateway URL, e.g. https://cerver.example.com")
    p.add_argument("--home", help="state directory (default: $CERVER_RELAY_HOME or ~/.config)")
    p.add_argument("--max-concurrent", type=int, default=4, help="runs at once on this host")
    p.add_argument("--no-network", action="store_true", help="refuse network for sandboxes")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser to log in")
    p.add_argument("--heartbeat-timeout", type=float, default=30.0, help=argparse.SUPPRESS)
    sub = p.add_subparsers(dest="command")
    sub.add_parser("run", help="log in if needed and serve (the default)")
    sub.add_parser("logout", help="revoke this machine's relay credential")
    ok = sub.add_parser("approve", help="approve a user code (needs CERVER_API_TOKEN)")
    ok.add_argument("code")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.max_concurrent < 1:
        print("error: --max-concurrent must be at least 1", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    commands = {None: run_relay, "run": run_relay, "logout": logout, "approve": approve}
    try:
        return asyncio.run(commands[args.command](args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
