"""Real processes for the relay tests: a `cerver serve` gateway (restartable, 2 ingress
replicas) and `cerver relay` hosts, each with its own state directory."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx

from tests.conftest import free_port, make_home
from tests.serve_process import CERVER, start_server, stop_server

# Fast heartbeats so that "offline within the heartbeat timeout" is seconds, not 30 s.
GATEWAY_ENV = {
    "CERVER_INGRESS_REPLICAS": "2",
    "CERVER_RELAY_HEARTBEAT_S": "1",
    "CERVER_RELAY_HEARTBEAT_TIMEOUT_S": "5",
    "CERVER_RELAY_POLL_INTERVAL_S": "2",
    "CERVER_SESSION_POOL_SIZE": "1",
    "CERVER_SANDBOX_POOL_SIZE": "0",
    "CERVER_RELAY_MAX_FRAME_BYTES": str(1024 * 1024),
}


class Gateway:
    def __init__(self) -> None:
        self.home = make_home()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        self.env |= GATEWAY_ENV | {"CERVER_HOME": str(self.home)}
        self.proc: subprocess.Popen[str] | None = None
        self.token = ""

    def start(self) -> None:
        """First start: read the first account's token. Later starts (same home, same port)
        print no token: wait for the listening line."""
        if not self.token:
            self.proc, self.token = start_server(self.env, self.port)
        else:
            self.proc = subprocess.Popen(
                [CERVER, "serve", "--port", str(self.port)], env=self.env, text=True,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
            assert self.proc.stdout is not None
            lines = []
            for line in self.proc.stdout:
                lines.append(line)
                if "listening on" in line:
                    break
            else:
                raise AssertionError("cerver serve did not restart:\n" + "".join(lines))
        threading.Thread(target=_drain, args=(self.proc,), daemon=True).start()

    def stop(self) -> None:
        if self.proc is not None:
            stop_server(self.proc)
            self.proc = None

    def api(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=60
        )


def _drain(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    for _ in proc.stdout:
        pass


class Relay:
    """`cerver relay` as a real process; its output lines are collected as they come."""

    def __init__(self, gateway: str, home: Path | None = None, *args: str) -> None:
        self.home = home or make_home()
        env = dict(os.environ)
        env["CERVER_RELAY_HOME"] = str(self.home)
        # Its sandboxes get uids of their own, apart from the gateway's local sandboxes.
        env["CERVER_SANDBOX_UID_BASE"] = "300000"
        self.proc = subprocess.Popen(
            [CERVER, "relay", "--gateway", gateway, "--no-browser", "--heartbeat-timeout", "5",
             *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, prefix: str, timeout_s: float = 30.0) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.05, deadline - time.monotonic()))
            except queue.Empty:
                break
            self.seen.append(line)
            if line.startswith(prefix):
                return line
        raise AssertionError(f"relay never printed {prefix!r}; it printed: {self.seen}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)


def login(gateway: Gateway, relay: Relay) -> str:
    """Approve the relay's printed user code through the API; answers its compute id."""
    code = relay.wait_for("User code: ").split(": ", 1)[1]
    with gateway.api() as api:
        answer = api.post("/v2/relay/approve", json={"code": code})
    assert answer.status_code == 200, answer.text
    compute_id = str(answer.json()["compute_id"])
    relay.wait_for(f"Connected as compute {compute_id}")
    return compute_id


def wait_status(gateway: Gateway, compute_id: str, status: str, timeout_s: float = 20) -> dict:
    deadline = time.monotonic() + timeout_s
    last: dict = {}
    with gateway.api() as api:
        while time.monotonic() < deadline:
            rows = api.get("/v2/computes").json()["computes"]
            last = next((r for r in rows if r["compute_id"] == compute_id), {})
            if last.get("status") == status:
                return last
            time.sleep(0.2)
    raise AssertionError(f"compute {compute_id} never became {status}: {last}")
