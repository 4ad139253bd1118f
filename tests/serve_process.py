"""`cerver serve` as a real subprocess for tests: start it, read its first-start token, stop
it with SIGTERM, and check that nothing it started is left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cerver.process_tree import descendants

__all__ = ["descendants"]

CERVER = str(Path(sys.executable).with_name("cerver"))


def start_server(env: dict[str, str], port: int) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [CERVER, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    token, lines = None, []
    deadline = time.time() + 150
    assert proc.stdout is not None
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("CERVER_API_TOKEN="):
            token = line.strip().split("=", 1)[1]
        if "listening on" in line:
            break
    if not (token and token.startswith("ck_") and lines and "listening on" in lines[-1]):
        stop_server(proc)
        pytest.fail("cerver serve did not start:\n" + "".join(lines))
    return proc, token


def stop_server(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def leftovers(pids: set[int], within_s: float = 30.0) -> list[int]:
    """The pids still alive after waiting up to ``within_s`` for them to go."""
    deadline = time.time() + within_s
    while time.time() < deadline and any(alive(p) for p in pids):
        time.sleep(0.5)
    return [p for p in pids if alive(p)]
