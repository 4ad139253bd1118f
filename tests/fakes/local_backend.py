"""What a fake provider runs commands in: sandboxes of our own ``local`` adapter.

A fake keeps the provider's *protocol* and delegates execution here, so commands run for
real (bubblewrap where present) without a second implementation of sandboxing. The fake
names a remote root (Vercel: ``/vercel/sandbox``; E2B: ``/home/user``): absolute paths
under it, and paths relative to it, map into the sandbox's workspace; anything else is
refused with ``PathOutside``.

Also here: the command-line wrapper every fake shares (``serve_fake``), which prints one
``NAME=<url>`` line and serves until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import posixpath
import shlex
import socket
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from cerver.adapters.base import ExecEvent, ExecRequest, SandboxRecord, SandboxSpec
from cerver.adapters.local import LocalAdapter
from cerver.config import Settings, prepare_home


class PathOutside(ValueError):
    """A path that is not under the fake's remote root."""


class UnknownSandbox(KeyError):
    pass


class LocalBackend:
    def __init__(self, root: str, home: Path | None = None) -> None:
        self.root = root.rstrip("/") or "/"
        home = home or Path(tempfile.mkdtemp(prefix="cerver-fake-", dir="/tmp"))
        home.chmod(0o711)
        self.settings = Settings(
            home=home,
            database_url=f"sqlite:///{home / 'unused.db'}",
            max_run_timeout_s=3600.0,
        )
        prepare_home(self.settings)
        self.adapter = LocalAdapter(self.settings)
        self.records: dict[str, SandboxRecord] = {}

    async def create(self, env: dict[str, str] | None = None, network: bool = False) -> str:
        spec = SandboxSpec(account_id="fake", env=env or {}, network=network)
        record = await self.adapter.create_sandbox(spec)
        self.records[record.sandbox_id] = record
        return record.sandbox_id

    def record(self, sandbox_id: str) -> SandboxRecord:
        try:
            return self.records[sandbox_id]
        except KeyError:
            raise UnknownSandbox(sandbox_id) from None

    def relative(self, path: str, cwd: str | None = None) -> str:
        """The workspace-relative form of a remote path ('' for the root itself)."""
        base = cwd or self.root
        full = posixpath.normpath(posixpath.join(base, path))
        if full == self.root:
            return ""
        prefix = self.root if self.root.endswith("/") else self.root + "/"
        if not full.startswith(prefix):
            raise PathOutside(f"{full} is outside {self.root}")
        return full[len(prefix) :]

    async def stream(
        self,
        sandbox_id: str,
        argv: list[str],
        *,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        timeout_s: float = 3600.0,
    ) -> AsyncIterator[ExecEvent]:
        """Run ``argv`` (as a shell command line) in the sandbox; events end with ``exit``."""
        request = ExecRequest(
            code=shlex.join(argv) if len(argv) > 1 else argv[0],
            language="shell",
            timeout_s=timeout_s,
            env=env or {},
            cwd=self.relative(cwd) or None if cwd else None,
        )
        events = self.adapter.run_stream(self.record(sandbox_id), request)
        async with contextlib.aclosing(events):
            async for event in events:
                yield event

    async def python(
        self, sandbox_id: str, code: str, *, env: dict[str, str] | None = None, timeout_s: float
    ) -> AsyncIterator[ExecEvent]:
        """Run ``code`` in the sandbox's one Python interpreter (variables persist)."""
        request = ExecRequest(code=code, language="python", timeout_s=timeout_s, env=env or {})
        events = self.adapter.run_stream(self.record(sandbox_id), request)
        async with contextlib.aclosing(events):
            async for event in events:
                yield event

    async def suspend(self, sandbox_id: str) -> None:
        """Stop the sandbox's processes (its interpreter too); its files stay."""
        await self.adapter.suspend(self.record(sandbox_id))

    async def read(self, sandbox_id: str, path: str, cwd: str | None = None) -> bytes:
        return await self.adapter.read_file(self.record(sandbox_id), self.relative(path, cwd))

    async def write(self, sandbox_id: str, path: str, data: bytes, cwd: str | None = None) -> None:
        await self.adapter.write_file(self.record(sandbox_id), self.relative(path, cwd), data)

    async def delete(self, sandbox_id: str) -> None:
        record = self.records.pop(sandbox_id, None)
        if record is not None:
            await self.adapter.delete_sandbox(record)

    async def close(self) -> None:
        for sandbox_id in list(self.records):
            await self.delete(sandbox_id)
        await self.adapter.close()


def fake_arguments(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument(
        "--reject-key", action="append", default=[], help="refuse this key as the service would"
    )
    return parser.parse_args()


def serve_fake(app: object, host: str, port: int, announce: Callable[[str], str]) -> None:
    """Bind, print one ``announce(url)`` line (flushed), and serve until killed."""
    import uvicorn

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    url = f"http://{host}:{sock.getsockname()[1]}"
    print(announce(url), flush=True)
    config = uvicorn.Config(app, log_level="warning", lifespan="on")  # type: ignore[arg-type]
    asyncio.run(uvicorn.Server(config).serve(sockets=[sock]))
