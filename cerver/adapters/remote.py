"""What every adapter of a remote provider (vercel, daytona, e2b) shares: importing its
optional SDK, turning the provider's HTTP failures into ``cerver.errors``, mapping
workspace-relative paths under the provider's root, and assembling streamed output into
the one ``ExecResult``.

Provider HTTP status -> Cerver error:

    401, 403        ProviderAuthFailed   502 provider_auth_failed (the provider's message)
    404 (sandbox)   SandboxLost          502 sandbox_lost (the session replaces it)
    429             RateLimited          429 rate_limited, Retry-After passed through
    other           ProviderError        502 provider_error
"""

from __future__ import annotations

import asyncio
import importlib
import posixpath
import re
import time
from collections.abc import AsyncGenerator
from typing import Any

from cerver.adapters.base import ExecEvent, ExecResult
from cerver.adapters.local.run_loop import collect
from cerver.errors import (
    BadRequest,
    CerverError,
    ComputeUnavailable,
    PathEscape,
    ProviderAuthFailed,
    ProviderError,
    RateLimited,
    SandboxLost,
)

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
DEFAULT_RETRY_AFTER_S = 1.0
TIMED_OUT_EXIT = 124


def import_sdk(module: str, *, provider: str, extra: str) -> Any:
    """The provider's SDK, imported on first use; a missing extra is a 409 naming it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ComputeUnavailable(
            f"the {provider} provider needs its SDK on this server: "
            f'pip install "cerver-on-ray[{extra}]"',
            details={"provider": provider, "extra": extra},
        ) from None


def http_error(
    provider: str,
    status: int,
    message: str,
    *,
    retry_after: str | None = None,
    sandbox_id: str | None = None,
) -> CerverError:
    """One provider HTTP failure as a Cerver error (``message`` is the provider's own)."""
    if status in (401, 403):
        return ProviderAuthFailed(
            f"{provider} refused the account's credentials: {message}; register working "
            f"ones with POST /v2/account/providers",
            details={"provider": provider, "status": status},
        )
    if status == 429:
        try:
            wait = float(retry_after) if retry_after else DEFAULT_RETRY_AFTER_S
        except ValueError:
            wait = DEFAULT_RETRY_AFTER_S
        return RateLimited(
            f"{provider} is rate limiting this account: {message}",
            retry_after_s=wait,
            details={"provider": provider},
        )
    if status in (404, 410) and sandbox_id is not None:
        return SandboxLost(
            f"{provider} sandbox {sandbox_id} no longer exists: {message}",
            details={"provider": provider, "sandbox_id": sandbox_id},
        )
    return ProviderError(
        f"{provider} answered {status}: {message}", details={"provider": provider, "status": status}
    )


def check_env(env: dict[str, str]) -> None:
    for key, value in env.items():
        if not ENV_NAME.match(key) or "\x00" in value:
            raise BadRequest(f"env: invalid environment variable {key!r}", details={"field": "env"})


def refuse_options(provider: str, options: dict[str, Any]) -> None:
    raise BadRequest(
        f"unknown {provider} options {sorted(options)}; this provider takes none",
        details={"field": "options"},
    )


def _relative(path: str) -> str:
    if not isinstance(path, str) or not path or "\x00" in path:
        raise BadRequest("file path must be a non-empty string without NUL bytes")
    if path.startswith("/"):
        raise PathEscape(
            f"path {path!r} is absolute; give it relative to the workspace",
            details={"path": path},
        )
    clean = posixpath.normpath(path)
    if clean == ".." or clean.startswith("../"):
        raise PathEscape(f"path {path!r} leaves the workspace", details={"path": path})
    return clean


def remote_file(root: str, path: str) -> str:
    """The provider-side path of workspace-relative ``path`` (400 if it leaves it)."""
    clean = _relative(path)
    if clean == ".":
        raise BadRequest(f"path {path!r} names the workspace itself, not a file")
    return posixpath.join(root, clean)


def remote_dir(root: str, path: str | None) -> str:
    if not path:
        return root
    clean = _relative(path)
    return root if clean == "." else posixpath.join(root, clean)


class QueueWriter:
    """A text stream an SDK writes process output to; each write becomes one event."""

    def __init__(self, queue: asyncio.Queue[Any], kind: str) -> None:
        self.queue, self.kind = queue, kind

    def write(self, data: str) -> int:
        if data:
            self.queue.put_nowait(ExecEvent(type=self.kind, data=data))  # type: ignore[arg-type]
        return len(data)

    def flush(self) -> None:
        pass

    def writable(self) -> bool:
        return True


def exit_event(exit_code: int, started: float) -> ExecEvent:
    result = ExecResult(exit_code=exit_code, duration_ms=(time.perf_counter() - started) * 1000)
    return ExecEvent(type="exit", result=result)


async def drain(
    queue: asyncio.Queue[Any],
    started: float,
    *,
    timeout_s: float,
    python: bool = False,
    limit: int = 1024 * 1024,
) -> AsyncGenerator[ExecEvent, None]:
    """Yield output events from ``queue`` and, last, one ``exit`` with the whole result.

    The queue carries ``ExecEvent``s, an exception (re-raised here) and ``None`` (the
    producer is done). Past ``timeout_s`` the run ends as timed out."""
    out: list[str] = []
    err: list[str] = []
    size = 0
    truncated = False
    final: ExecResult | None = None
    deadline = started + timeout_s
    while True:
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            final = None
            break
        try:
            item = await asyncio.wait_for(queue.get(), remaining)
        except TimeoutError:
            break
        if item is None:
            break
        if isinstance(item, BaseException):
            raise item
        if item.type == "exit":
            final = item.result
            continue
        size += len(item.data)
        if size > limit:
            truncated = True
        else:
            (out if item.type == "stdout" else err).append(item.data)
        yield item
    duration = (time.perf_counter() - started) * 1000.0
    if final is None:
        note = f"timed out after {timeout_s:g}s\n"
        err.append(note)
        yield ExecEvent(type="stderr", data=note)
        result = ExecResult(exit_code=TIMED_OUT_EXIT, timed_out=True, error=note.strip())
    else:
        result = final
    stderr = "".join(err)
    error = result.error
    if error is None and python and result.exit_code != 0:
        error = stderr.strip() or f"exit code {result.exit_code}"
    yield ExecEvent(
        type="exit",
        result=result.model_copy(
            update={
                "stdout": "".join(out),
                "stderr": stderr,
                "duration_ms": duration,
                "truncated": truncated,
                "error": error,
            }
        ),
    )


__all__ = [
    "collect",
    "drain",
    "exit_event",
    "http_error",
    "import_sdk",
    "remote_dir",
    "remote_file",
]
