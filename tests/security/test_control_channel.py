"""Findings 4 and 5 of issue 10: the sandbox's control channel is the sandbox's word, and
no wait on it is without a deadline. Real sandboxes, both isolation modes.

4. What the supervisor and the Python driver write back is the sandbox's word: an
   oversized frame length, a forged "started" pid, a control line without end.
5. ``kill -STOP`` on the supervisor made the host re-send a kill frame forever.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cerver.adapters.base import ExecRequest, ExecResult, SandboxRecord
from cerver.adapters.local import LocalAdapter, reaping
from cerver.adapters.local.host_supervisor import ShellTemplate, Supervisor
from cerver.adapters.local.isolation import ChildSetup, Launch
from cerver.adapters.local.layout import Limits
from cerver.errors import ProviderError

pytestmark = pytest.mark.timeout(60)


async def run(
    adapter: LocalAdapter, record: SandboxRecord, code: str, lang: str = "shell", **kw: object
) -> ExecResult:
    request = ExecRequest.model_validate({"code": code, "language": lang, **kw})
    return await adapter.run(record, request)


# A supervisor that lies: what user code could make the real one say, were it able to
# write into its pipe (it cannot here, as root: the supervisor is not dumpable, and
# test_escape_probes checks that; without root, and in future layouts, it may).
HOSTILE = """
import json, os, struct, sys, time
H = struct.Struct("!cII")
def send(kind, chan, body=b""):
    os.write(1, H.pack(kind, chan, len(body)) + body)
send(b"H", 0, json.dumps({"pid": os.getpid()}).encode())
stdin = os.fdopen(0, "rb", buffering=0)
def read(n):
    data = b""
    while len(data) < n:
        data += stdin.read(n - len(data))
    return data
while True:  # skip the arming frame: wait for the first run request
    kind, chan, size = H.unpack(read(H.size))
    read(size)
    if kind == b"R":
        break
MODE = sys.argv[1]
if MODE == "huge":
    os.write(1, H.pack(b"O", chan, 0xFFFFFFF0) + b"x" * 1000)
elif MODE == "forged-pid":
    send(b"S", chan, json.dumps({"pid": int(sys.argv[2])}).encode())
    time.sleep(0.2)
    os._exit(0)
elif MODE == "garbage":
    send(b"S", chan, b"[not an object]")
time.sleep(60)
"""


def hostile_supervisor(tmp_path: Path, *args: str) -> Supervisor:
    workspace = str(tmp_path)

    def build(_argv: list[str]) -> Launch:
        setup = ChildSetup(limits=Limits(cpu_s=60, memory_mb=512, fsize_mb=16, nproc=64))
        argv = [sys.executable, "-c", HOSTILE, *args]
        return Launch(argv, {"PATH": "/usr/bin:/bin"}, workspace, setup, workspace)

    return Supervisor(sys.executable, build, ShellTemplate("/bin/bash", {}, workspace))


async def test_an_oversized_frame_is_fatal_for_the_sandbox(tmp_path: Path) -> None:
    """Before: the host waited to read a 4 GiB payload, buffering all that came after."""
    sup = hostile_supervisor(tmp_path, "huge")
    await sup.ensure_started()
    pid = sup.pid
    assert pid is not None
    started = time.monotonic()
    with pytest.raises(ProviderError, match="broke its control protocol"):
        await sup.spawn(["true"], env={}, cwd="/", limit=1024)
    assert time.monotonic() - started < 15
    assert not sup.alive and "4294967280 bytes" in (sup.fault or "")
    await asyncio.sleep(0.1)
    assert not os.path.exists(f"/proc/{pid}") or _zombie(pid)  # killed, not left running


async def test_a_frame_that_does_not_parse_is_fatal(tmp_path: Path) -> None:
    sup = hostile_supervisor(tmp_path, "garbage")
    await sup.ensure_started()
    with pytest.raises(ProviderError, match="broke its control protocol"):
        await sup.spawn(["true"], env={}, cwd="/", limit=1024)
    assert not sup.alive


async def test_a_forged_started_pid_is_never_signalled(tmp_path: Path) -> None:
    """Before (rlimits mode): when the supervisor died, the host SIGKILLed the process
    group a "started" frame named, as root: any process group of the host."""
    victim = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        sup = hostile_supervisor(tmp_path, "forged-pid", str(victim.pid))
        await sup.ensure_started()
        proc = await sup.spawn(["true"], env={}, cwd="/", limit=1024)
        assert proc.pid == victim.pid  # the sandbox's word, kept for display only
        assert proc.group is None  # not a child of our supervisor: never signalled
        await asyncio.wait_for(proc.exited.wait(), 5)  # the supervisor exited: run lost
        await asyncio.sleep(0.2)
        assert victim.poll() is None, "the host signalled a pid taken from a frame"
        await sup.stop()
    finally:
        victim.kill()
        victim.wait()


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except OSError:
        return True


def test_only_a_child_group_of_the_supervisor_is_trusted() -> None:
    child = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        assert reaping.child_group_of(child.pid, parent=os.getpid()) is not None
        assert reaping.child_group_of(child.pid, parent=1) is None  # not our supervisor's
        assert reaping.child_group_of(os.getpid(), parent=os.getppid()) is None  # no leader
        assert reaping.child_group_of(1, parent=0) is None
    finally:
        child.kill()
        child.wait()


async def test_a_control_line_without_end_is_fatal_and_bounded(
    adapter: LocalAdapter, sandbox: SandboxRecord
) -> None:
    """Before: the ctl reader buffered up to 16 MiB per line (and without bound once a
    line overran it). Now a line beyond 1 MiB kills the sandbox; the next run gets a fresh
    interpreter."""
    await run(adapter, sandbox, "x = 41", "python")
    code = (
        "import os, sys\nos.write(sys.modules['__main__'].CTL['out'], b'x' * (2 * 1024 * 1024))\n"
    )
    result = await run(adapter, sandbox, code, "python", timeout_s=20)
    assert result.interpreter_restarted
    assert "broke its control protocol" in result.stderr
    after = await run(adapter, sandbox, "print(1 + 1)", "python")
    assert after.stdout == "2\n"
    lost = await run(adapter, sandbox, "print(x)", "python")
    assert "NameError" in lost.stderr  # a fresh interpreter: its state was lost, and said so


async def test_a_stopped_supervisor_is_killed_after_one_grace_period(
    adapter: LocalAdapter, sandbox: SandboxRecord
) -> None:
    """Before: the host re-sent a kill frame to the stopped supervisor forever."""
    started = time.monotonic()
    result = await run(adapter, sandbox, "kill -STOP $PPID; sleep 100", timeout_s=2)
    elapsed = time.monotonic() - started
    assert result.timed_out and result.exit_code == 124
    assert "did not answer a kill" in result.stderr
    assert elapsed < 2 + 3 + 3 + 20  # timeout, kill grace, escalation, slack (loaded CI)
    again = await run(adapter, sandbox, "echo ok")
    assert again.stdout == "ok\n" and again.exit_code == 0


async def test_a_stopped_supervisor_under_python_is_replaced(
    adapter: LocalAdapter, sandbox: SandboxRecord
) -> None:
    await run(adapter, sandbox, "y = 1", "python")
    code = "import os, signal, time\nos.kill(os.getppid(), signal.SIGSTOP)\ntime.sleep(100)"
    started = time.monotonic()
    result = await run(adapter, sandbox, code, "python", timeout_s=2)
    assert time.monotonic() - started < 2 + 1 + 3 + 20  # slack for a loaded machine
    assert result.timed_out and result.interpreter_restarted
    after = await run(adapter, sandbox, "print('fresh', 'y' in globals())", "python")
    assert after.stdout == "fresh False\n"


async def test_a_stopped_supervisor_between_runs_is_replaced(
    adapter: LocalAdapter, sandbox: SandboxRecord
) -> None:
    """A run that stops its supervisor as it exits: the exit is never reported (the run
    ends at its timeout), and the next run finds the supervisor unresponsive, kills it,
    and runs on a fresh one."""
    result = await run(adapter, sandbox, "kill -STOP $PPID", timeout_s=2)
    assert result.timed_out
    started = time.monotonic()
    again = await run(adapter, sandbox, "echo ok")
    assert again.stdout == "ok\n"
    assert time.monotonic() - started < 30  # OPEN_TIMEOUT_S, a kill, a restart, slack
