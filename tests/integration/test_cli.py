"""`cerver serve` and `cerver token create` as a user runs them: a real process, its own Ray,
its own CERVER_HOME; SIGTERM leaves no process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port, make_home

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]

CERVER = str(Path(sys.executable).with_name("cerver"))


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_serve_flow_and_clean_shutdown() -> None:
    home, port = make_home(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env |= {"CERVER_HOME": str(home), "CERVER_RAY_NAMESPACE": "cli-test"}
    proc = subprocess.Popen(
        [CERVER, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    token, lines = None, []
    try:
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
        assert token and token.startswith("ck_"), "".join(lines)
        base = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=base, headers=headers, timeout=60) as c:
            s = c.post("/v2/sessions", json={"compute": {"provider": "local"}}).json()
            out = c.post(f"/v2/sessions/{s['session_id']}/run", json={"code": "echo hi"}).json()
            assert out["stdout"] == "hi\n"
            # A token made by the CLI works against the running server.
            new = subprocess.run(
                [CERVER, "token", "create", "--account", "bob"],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            assert new.startswith("ck_") and "\n" not in new
            r = httpx.get(f"{base}/v2/sessions", headers={"Authorization": f"Bearer {new}"})
            assert r.status_code == 200 and r.json()["sessions"] == []
        tree = descendants(proc.pid)
        assert tree, "the server should have started Ray processes"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    deadline = time.time() + 30
    while time.time() < deadline and any(alive(p) for p in tree):
        time.sleep(0.5)
    leftovers = [p for p in tree if alive(p)]
    assert not leftovers, f"processes left behind: {leftovers}"
    # The token is stored hashed, never in clear.
    assert token.encode() not in (home / "cerver.db").read_bytes()
