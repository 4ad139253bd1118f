"""Spawning a confined process from a ``Launch``, and killing what we spawned.

Every sandboxed process is the leader of a new session (its own process group); in bwrap
mode the group also holds bwrap's pid-namespace init, whose death takes the whole
namespace with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import subprocess
from collections.abc import Callable

from cerver.adapters.local.capture import READ_CHUNK
from cerver.adapters.local.isolation import Launch, SetupFailure, SetupReport
from cerver.adapters.local.reaping import (
    KILL_WAIT_S,
    adopt_child,
    direct_children,
    ensure_subreaper,
    kill_group,
    signal_group,
)
from cerver.errors import ProviderError, SandboxLost

log = logging.getLogger(__name__)


class _Protocol(asyncio.subprocess.SubprocessStreamProtocol):
    """Knows when the process exited, even while something else still holds its pipes
    (``Process.wait()`` also waits for the pipes to close)."""

    def __init__(self, limit: int, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=limit, loop=loop)
        self.exited = asyncio.Event()

    def process_exited(self) -> None:
        super().process_exited()
        self.exited.set()


def exited_event(proc: asyncio.subprocess.Process) -> asyncio.Event:
    protocol = proc._protocol  # type: ignore[attr-defined]
    assert isinstance(protocol, _Protocol)
    return protocol.exited


async def spawn(
    launch: Launch,
    *,
    stdin: int = subprocess.DEVNULL,
    rebuild: Callable[[], Launch] | None = None,
) -> asyncio.subprocess.Process:
    """Start ``launch``. A child whose sandbox cgroup vanished before it joined (removed by
    another server's sweep or a concurrent release; docs/security.md) never runs: with
    ``rebuild``, which makes the cgroup again, the start is tried once more."""
    ensure_subreaper()
    for attempt in range(2):
        if not os.path.isdir(launch.workspace):
            raise SandboxLost("the sandbox's workspace is gone")
        try:
            return await _start(launch, stdin)
        except _SetupFailed as failed:
            if attempt or rebuild is None or not failed.failure.cgroup_gone:
                raise ProviderError(
                    f"could not start the sandbox process: {failed.failure}",
                    details={"step": failed.failure.step, "errno": failed.errno_name},
                ) from failed.__cause__
            log.warning("the sandbox's cgroup vanished before its process joined; retrying")
            launch = await asyncio.to_thread(rebuild)
    raise AssertionError("unreachable")


class _SetupFailed(Exception):
    def __init__(self, failure: SetupFailure) -> None:
        super().__init__(str(failure))
        self.failure = failure

    @property
    def errno_name(self) -> str | None:
        code = self.failure.code
        return errno.errorcode.get(code, str(code)) if code else None


async def _start(launch: Launch, stdin: int) -> asyncio.subprocess.Process:
    loop = asyncio.get_running_loop()
    report = SetupReport()
    try:
        transport, protocol = await loop.subprocess_exec(
            lambda: _Protocol(READ_CHUNK, loop),
            *launch.argv,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=launch.env,
            cwd=launch.cwd,
            preexec_fn=report.setup(launch.setup),
            start_new_session=True,
            pass_fds=launch.pass_fds,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        failure = report.failure()
        if failure is not None:
            log.warning("a sandbox process's setup failed: %s (%s)", failure, exc)
            raise _SetupFailed(failure) from exc
        raise ProviderError(f"could not start the sandbox process: {exc}") from exc
    finally:
        report.close()
    proc = asyncio.subprocess.Process(transport, protocol, loop)
    adopt_child(proc.pid)
    return proc


def exit_code_of(returncode: int | None) -> int:
    if returncode is None:
        return -1
    return 128 - returncode if returncode < 0 else returncode


async def kill_process(proc: asyncio.subprocess.Process) -> None:
    """Kill a spawned process and its whole group, and reap them."""
    # The process first: Popen.send_signal polls (reaps) it, which must not find a zombie
    # made by our killpg, or asyncio's child watcher loses its exit status.
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    signal_group(proc.pid)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(exited_event(proc).wait(), KILL_WAIT_S)
    direct_children.discard(proc.pid)
    await kill_group(proc.pid)
