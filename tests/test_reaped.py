"""tests.reaped, the wrapper `make test` runs the suites under: it fails a command that
leaves a process behind (and kills it), and passes the command's own status through."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import exited

pytestmark = pytest.mark.timeout(60)
ROOT = Path(__file__).resolve().parents[1]


def _reaped(code: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CERVER_TEST_LEFTOVER_GRACE_S="1")
    return subprocess.run(
        [sys.executable, "-m", "tests.reaped", sys.executable, "-c", code],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=45,
    )  # fmt: skip


def test_a_clean_command_passes_and_its_status_goes_through() -> None:
    assert _reaped("pass").returncode == 0
    assert _reaped("raise SystemExit(3)").returncode == 3


def test_a_process_left_behind_fails_the_run_and_is_killed() -> None:
    # A grandchild in its own session, orphaned when its parent exits: what a fixture that
    # forgets to stop a server leaves.
    leak = (
        "import subprocess\n"
        "p = subprocess.Popen(['sleep', '300'], start_new_session=True)\n"
        "print(p.pid, flush=True)\n"
    )
    done = _reaped(leak)
    assert done.returncode == 1, done.stderr
    pid = int(done.stdout.split()[0])
    assert f"pid {pid}: sleep 300" in done.stderr
    assert exited(pid)


def test_orphans_that_exit_during_the_command_are_not_counted() -> None:
    code = (
        "import subprocess, time\n"
        "subprocess.Popen(['sleep', '0.2'], start_new_session=True)\n"
        "time.sleep(1.5)\n"
    )
    assert _reaped(code).returncode == 0
