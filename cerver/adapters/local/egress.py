"""The egress proxy of sandboxes with ``network.allow``: host side, outside the sandbox.

Such a sandbox has no network of its own: bwrap's ``--unshare-net`` leaves it a loopback
and nothing else (no pasta, no route, no DNS). Its one way out is a unix socket in its
workspace (``.cerver/egress.sock``), on which this proxy listens, one listener per sandbox,
so the proxy knows whose connection it serves from the socket it arrived on, never from
anything the sandbox says. Inside, ``inside/egress_forward.py`` listens on
``127.0.0.1:FORWARD_PORT`` and copies bytes to that socket, so ordinary tools work with
``HTTP(S)_PROXY`` (``egress_inside.py``).

Per connection the proxy reads one request head: ``CONNECT host:port`` (HTTPS and any
TCP) or an absolute-form ``GET http://host/...`` (plain HTTP, sent upstream in origin form
with ``Connection: close``). It then

1. refuses a host given as an IP address, and a name the allowlist does not match;
2. resolves the name itself (IPv4; the sandbox's own resolution is never used) and
   refuses it when ANY address is not public: loopback, private, link-local, shared,
   reserved, multicast, or in one of this node's subnets (``isolation.node_networks``);
   this is what stops DNS rebinding (an allowed name that points inside);
3. connects to the address it checked (no second lookup) and relays bytes both ways.

A refusal answers ``403`` with the reason in the body and is recorded for the sandbox;
``take_denials`` hands the records to the next run's result (which the session counts in
``egress_denied_count``). One proxy per host process (the process that spawns the
sandboxes; its ``LocalAdapter`` owns it), started at the first such sandbox, closed with
the adapter.

Why not a library: proxy.py, the well-kept pure-Python one, runs its own acceptor
processes/threads and plugin model; per-sandbox unix listeners, a per-listener
allowlist and our own resolver check would be plugins fighting its lifecycle, for what is
a CONNECT parser and two byte pumps here.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import os
import socket
from collections import deque
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from cerver.adapters.base import EgressDenial
from cerver.adapters.egress_allow import matches
from cerver.adapters.local import isolation
from cerver.adapters.local.egress_inside import SOCKET_NAME
from cerver.adapters.local.layout import INTERNAL_DIR, LocalSandboxData
from cerver.config import Settings
from cerver.errors import ProviderError

MAX_HEAD_BYTES = 16 * 1024
HEAD_TIMEOUT_S = 10.0
RESOLVE_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 10.0
MAX_CONNECTIONS = 64  # per sandbox, at once
MAX_DENIALS_KEPT = 200  # per sandbox between two runs; older ones are counted, not kept
CHUNK = 64 * 1024


class Denied(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def is_public(address: str, blocked: list[ipaddress.IPv4Network]) -> bool:
    """An IPv4 address on the internet: not loopback, private, link-local, shared,
    reserved, multicast, nor in ``blocked`` (the cluster's ranges, this node's subnets)."""
    addr = ipaddress.ip_address(address)
    if not isinstance(addr, ipaddress.IPv4Address):
        return False
    if not addr.is_global or addr.is_multicast or addr.is_reserved:
        return False
    return not any(addr in net for net in blocked)


@dataclass
class _Listener:
    allow: tuple[str, ...]
    inode: tuple[int, int]
    server: asyncio.Server | None = None
    denials: deque[EgressDenial] = field(default_factory=lambda: deque(maxlen=MAX_DENIALS_KEPT))
    slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(MAX_CONNECTIONS))

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


class EgressProxy:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._listeners: dict[str, _Listener] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._blocked: list[ipaddress.IPv4Network] | None = None  # at the first listener

    # ------------------------------------------------------------------ listeners

    async def ensure(self, sandbox_id: str, data: LocalSandboxData) -> None:
        """A listener on the sandbox's socket (made again when the file is gone)."""
        if self._blocked is None:
            nets = [*isolation.BLOCKED_NETS, *await asyncio.to_thread(isolation.node_networks)]
            self._blocked = [ipaddress.IPv4Network(net) for net in nets]
        allow = tuple(data.egress_allow or ())
        current = self._listeners.get(sandbox_id)
        dirfd = _open_internal_dir(data.workspace)
        try:
            if current is not None and _inode(dirfd) == current.inode:
                current.allow = allow
                return
            if current is not None:
                self._listeners.pop(sandbox_id)
                current.close()
            owner = (data.uid, data.gid) if data.dedicated_uid else None
            sock = _bind(dirfd, owner)
            listener = _Listener(allow, _inode(dirfd))
            try:
                serve = functools.partial(self._serve, listener)
                listener.server = await asyncio.start_unix_server(serve, sock=sock)
            except BaseException:
                sock.close()
                raise
            self._listeners[sandbox_id] = listener
        finally:
            os.close(dirfd)

    def take_denials(self, sandbox_id: str) -> list[EgressDenial]:
        listener = self._listeners.get(sandbox_id)
        if listener is None:
            return []
        taken = list(listener.denials)
        listener.denials.clear()
        return taken

    async def forget(self, sandbox_id: str) -> None:
        listener = self._listeners.pop(sandbox_id, None)
        if listener is not None:
            listener.close()

    async def close(self) -> None:
        listeners, self._listeners = list(self._listeners.values()), {}
        for listener in listeners:
            listener.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ------------------------------------------------------------------ one connection

    async def _serve(
        self, listener: _Listener, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            if listener.slots.locked():
                await _answer(writer, 503, "too many connections from this sandbox at once")
                return
            async with listener.slots:
                await self._proxy(listener, reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _proxy(
        self, listener: _Listener, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT_S)
        if len(head) > MAX_HEAD_BYTES:
            await _answer(writer, 431, "request head too large")
            return
        try:
            method, target, rest = _parse_head(head)
            host, port = _target(method, target)
        except ValueError as exc:
            await _answer(writer, 400, str(exc))
            return
        try:
            address = await self._check(listener.allow, host, port)
        except Denied as denied:
            listener.denials.append(EgressDenial(host=host, port=port, reason=denied.reason))
            await _answer(writer, 403, f"cerver egress: {host}:{port} denied: {denied.reason}")
            return
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(address, port), CONNECT_TIMEOUT_S
            )
        except (OSError, TimeoutError) as exc:
            await _answer(writer, 502, f"cerver egress: {host}:{port} unreachable: {exc}")
            return
        try:
            if method == "CONNECT":
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                up_writer.write(_origin_form(method, target, rest))
            await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))
        finally:
            up_writer.close()

    async def _check(self, allow: tuple[str, ...], host: str, port: int) -> str:
        """The address to connect to, or Denied saying why."""
        if _is_ip(host):
            raise Denied("an IP address; the allowlist holds names")
        if not matches(host, allow):
            raise Denied("not in network.allow")
        table = self.settings.egress_test_hosts
        if host in table:
            addresses = [table[host]]
        else:
            loop = asyncio.get_running_loop()
            try:
                infos = await asyncio.wait_for(
                    loop.getaddrinfo(host, port, family=socket.AF_INET, type=socket.SOCK_STREAM),
                    RESOLVE_TIMEOUT_S,
                )
            except (OSError, TimeoutError):
                raise Denied("the name does not resolve") from None
            addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if not addresses:
            raise Denied("the name does not resolve")
        exempt = set(self.settings.egress_test_targets)
        blocked = self._blocked or []
        for address in addresses:
            if f"{address}:{port}" not in exempt and not is_public(address, blocked):
                raise Denied(f"resolves to {address}, which is not a public address")
        return addresses[0]


# --------------------------------------------------------------------------- helpers


def _open_internal_dir(workspace: str) -> int:
    """The workspace's internal directory, opened without following symlinks (the sandbox
    owns the workspace and could have replaced it with a link)."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        ws = os.open(workspace, flags)
    except OSError as exc:
        raise ProviderError("the sandbox's workspace is gone") from exc
    try:
        return os.open(INTERNAL_DIR, flags, dir_fd=ws)
    except OSError as exc:
        raise ProviderError(
            f"the sandbox's {INTERNAL_DIR} directory is missing or not a directory, so its "
            "egress socket cannot be made; the sandbox has no network until it is restored",
        ) from exc
    finally:
        os.close(ws)


def _inode(dirfd: int) -> tuple[int, int]:
    try:
        st = os.stat(SOCKET_NAME, dir_fd=dirfd, follow_symlinks=False)
    except FileNotFoundError:
        return (-1, -1)
    return (st.st_dev, st.st_ino)


def _bind(dirfd: int, owner: tuple[int, int] | None) -> socket.socket:
    """A listening unix socket at INTERNAL_DIR/SOCKET_NAME, bound through the directory's
    fd (a workspace path can be longer than a socket address allows); its owner is the
    sandbox's uid (lchown: never follows a link the sandbox could swap in)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(SOCKET_NAME, dir_fd=dirfd)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(f"/proc/self/fd/{dirfd}/{SOCKET_NAME}")
        if owner is not None:
            os.chown(SOCKET_NAME, *owner, dir_fd=dirfd, follow_symlinks=False)
        sock.listen(128)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise ProviderError(f"could not make the sandbox's egress socket: {exc.strerror}") from exc
    return sock


def _parse_head(head: bytes) -> tuple[str, str, list[bytes]]:
    lines = head[:-4].split(b"\r\n")
    parts = lines[0].decode("latin-1").split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise ValueError("not an HTTP/1.x proxy request")
    return parts[0].upper(), parts[1], lines[1:]


def _target(method: str, target: str) -> tuple[str, int]:
    """(host, port) of a CONNECT authority or an absolute http:// URL."""
    if method == "CONNECT":
        host, sep, port_text = target.rpartition(":")
        if not sep or not port_text.isdigit():
            raise ValueError("CONNECT needs host:port")
        port = int(port_text)
    else:
        url = urlsplit(target)
        if url.scheme != "http" or not url.hostname:
            raise ValueError("a proxy request needs an absolute http:// URL (or CONNECT)")
        host, port = url.hostname, url.port or 80
        if url.username is not None:
            raise ValueError("credentials in the URL are not relayed")
    host = host.strip("[]").lower().rstrip(".")
    if not host or not 0 < port < 65536:
        raise ValueError("bad host or port")
    return host, port


def _origin_form(method: str, target: str, rest: list[bytes]) -> bytes:
    url = urlsplit(target)
    path = (url.path or "/") + (f"?{url.query}" if url.query else "")
    keep = [
        line
        for line in rest
        if not line.lower().startswith((b"proxy-", b"connection:", b"keep-alive:"))
    ]
    lines = [f"{method} {path} HTTP/1.1".encode(), *keep, b"Connection: close"]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        # inet_aton forms ("2130706433", "127.1") resolve to addresses too
        try:
            socket.inet_aton(host)
        except OSError:
            return False
        return True
    return True


async def _answer(writer: asyncio.StreamWriter, status: int, text: str) -> None:
    reasons = {400: "Bad Request", 403: "Forbidden", 431: "Request Header Fields Too Large",
               502: "Bad Gateway", 503: "Service Unavailable"}  # fmt: skip
    body = (text + "\n").encode()
    writer.write(
        f"HTTP/1.1 {status} {reasons[status]}\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    with contextlib.suppress(OSError):
        await writer.drain()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(CHUNK):
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        writer.close()
