"""`cerver serve` stops within 10 s of SIGTERM with 20 live sessions, runs in flight, and one
sandbox's processes all stopped (``SIGSTOP``), and leaves no process behind (issue 9, bug 5: it
took about 38 s, and a stopped supervisor kept it in "shutting down" for minutes)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import free_port, make_home
from tests.serve_process import alive, descendants, leftovers, start_server

pytestmark = [pytest.mark.timeout(400), pytest.mark.slow]

SESSIONS = 20
STOP_WITHIN_S = 10.0
IN_FLIGHT = 4


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _long_run(port: int, token: str, session_id: str, *, stream: bool) -> None:
    body = {"code": "sleep 100", "timeout": 110, "stream": stream}
    with contextlib.suppress(httpx.HTTPError):
        httpx.post(
            f"http://127.0.0.1:{port}/v2/sessions/{session_id}/run",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            timeout=120,
        )


def _sandbox_processes(server_pid: int) -> set[int]:
    """Every process below a session host's worker: the sandboxes' own processes."""
    hosts = [p for p in descendants(server_pid) if "SessionHost" in _cmdline(p)]
    return {pid for host in hosts for pid in descendants(host)}


def test_sigterm_with_live_sessions_and_a_stopped_sandbox_stops_fast_and_clean() -> None:
    home, port = make_home(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env |= {"CERVER_HOME": str(home), "CERVER_RAY_NAMESPACE": "shutdown-test"}
    proc, token = start_server(env, port)
    stopped: set[int] = set()
    flight = ThreadPoolExecutor(IN_FLIGHT)
    try:
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=120) as c:

            def live_session(n: int) -> str:
                r = c.post("/v2/sessions", json={"compute": {"provider": "local"}})
                assert r.status_code == 201, r.text
                sid = r.json()["session_id"]
                lang = "python" if n % 2 else "shell"  # interpreters and shells both live
                run = c.post(
                    f"/v2/sessions/{sid}/run",
                    json={"code": "print(1)" if n % 2 else "echo 1", "language": lang},
                )
                assert run.status_code == 200, run.text
                return sid

            with ThreadPoolExecutor(4) as pool:
                sessions = list(pool.map(live_session, range(SESSIONS)))
            assert len(sessions) == SESSIONS
        # Runs still in flight when the signal comes (plain and streamed): Serve's graceful
        # drain waited for them.
        for n, sid in enumerate(sessions[:IN_FLIGHT]):
            flight.submit(_long_run, port, token, sid, stream=n % 2 == 1)
        time.sleep(3.0)
        sandboxes = _sandbox_processes(proc.pid)
        assert sandboxes, "the sessions' sandbox processes should be running"
        # One sandbox's processes stop answering anything but SIGKILL.
        victim = min(sandboxes)
        stopped = {victim} | descendants(victim)
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)
        tree = descendants(proc.pid)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=60)
        took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    flight.shutdown(wait=False, cancel_futures=True)
    left = leftovers(tree, within_s=1.0)
    for pid in left:  # do not leave them to the next test either
        os.kill(pid, signal.SIGKILL)
    assert took < STOP_WITHIN_S, f"cerver serve took {took:.1f}s to stop after SIGTERM"
    assert proc.returncode == 0
    assert not left, f"processes left behind: {[(p, _cmdline(p)[:80]) for p in left]}"
    assert not any(alive(p) for p in stopped)
