"""Cerver's HAProxy launcher (cerver/serve_app/haproxy_lines.py, written by ingress.py):
it adds `option forwardfor` to the config Ray wrote, then runs the real HAProxy, and
refuses to start it when Ray's config no longer looks as expected. The rate limiter
believes the hop it adds, and only that one. No Ray here: the real HAProxy binary, in its
config-check mode (-c)."""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cerver.serve_app.haproxy_lines import ConfigChanged, with_cerver_lines
from cerver.serve_app.ingress import BINARY_VAR, DRAIN_VAR, FORWARDS_FLAG, ingress_env
from cerver.serve_app.ratelimit import client_address, client_key, local_haproxy
from tests.conftest import exited, free_port

pytestmark = pytest.mark.timeout(60)


def config_on(port: int) -> str:
    return f"""global
    maxconn 100
defaults
    mode http
    timeout connect 5s
    timeout client 5s
    timeout server 5s
frontend http_frontend
    bind 127.0.0.1:{port}
    default_backend default_backend
backend default_backend
    http-request return status 404
"""


CONFIG = config_on(free_port())  # checked (-c), never run: nothing binds the port


@pytest.fixture
def env() -> Iterator[dict[str, str]]:
    home = Path(tempfile.mkdtemp(prefix="h", dir="/tmp"))
    yield ingress_env(True, home)
    shutil.rmtree(home)


def test_the_lines_go_into_the_frontend_once() -> None:
    edited = with_cerver_lines(CONFIG)
    frontend = edited.split("frontend http_frontend\n")[1].split("backend ")[0]
    assert "    option forwardfor\n" in frontend
    assert with_cerver_lines(edited) == edited  # a reload of the same file: not twice
    assert edited.count("option forwardfor") == 1


@pytest.mark.parametrize("config", [CONFIG.replace("http_frontend", "web"), CONFIG + CONFIG])
def test_a_config_shaped_otherwise_is_refused(config: str) -> None:
    with pytest.raises(ConfigChanged, match="CERVER_SERVE_HAPROXY=0"):
        with_cerver_lines(config)


def test_rays_template_still_has_the_frontend() -> None:
    """A Ray upgrade that renames the frontend fails here, before any server starts."""
    from ray.serve._private.haproxy_templates import HAPROXY_CONFIG_TEMPLATE

    lines = [line.strip() for line in HAPROXY_CONFIG_TEMPLATE.splitlines()]
    assert lines.count("frontend http_frontend") == 1
    assert "option forwardfor" not in lines  # Ray added it itself: ours would be twice


def test_the_launcher_edits_then_runs_the_real_haproxy(env: dict[str, str]) -> None:
    launcher = Path(env[BINARY_VAR])
    assert stat.S_IMODE(launcher.stat().st_mode) == 0o700
    assert env[FORWARDS_FLAG] == "1" and float(env[DRAIN_VAR]) <= 5
    config = Path(env["RAY_SERVE_HAPROXY_CONFIG_FILE_LOC"])
    config.write_text(CONFIG)
    for _ in range(2):  # Ray starts it again on every reload
        done = subprocess.run([launcher, "-c", "-f", config], capture_output=True, timeout=30)
        assert done.returncode == 0, done.stderr
        assert config.read_text().count("option forwardfor") == 1


def test_the_launcher_refuses_a_config_it_cannot_edit(env: dict[str, str]) -> None:
    config = Path(env["RAY_SERVE_HAPROXY_CONFIG_FILE_LOC"])
    config.write_text(CONFIG.replace("http_frontend", "web"))
    launcher = env[BINARY_VAR]
    done = subprocess.run([launcher, "-c", "-f", config], capture_output=True, timeout=30)
    assert done.returncode == 78
    assert b"not starting HAProxy" in done.stderr and b"CERVER_SERVE_HAPROXY=0" in done.stderr


# A parent that starts the launcher the way Ray's proxy actor does, says HAProxy's pid, and
# waits to be killed.
PARENT = """
import subprocess, sys, time
child = subprocess.Popen(sys.argv[1:])
print(child.pid, flush=True)
time.sleep(300)
"""


def test_haproxy_dies_with_the_process_that_started_it(env: dict[str, str]) -> None:
    """A proxy actor killed outright (node lost, SIGKILL) must not leave its HAProxy bound
    to the server's port (CI found them outliving the suite)."""
    port = free_port()
    config = Path(env["RAY_SERVE_HAPROXY_CONFIG_FILE_LOC"])
    config.write_text(config_on(port))
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, env[BINARY_VAR], "-db", "-f", str(config)],
        stdout=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        assert parent.stdout is not None
        haproxy = int(parent.stdout.readline())
        deadline = time.monotonic() + 10
        while not _listening(port):  # the real HAProxy is up, serving
            assert time.monotonic() < deadline, "HAProxy never listened"
            time.sleep(0.05)
        assert Path(f"/proc/{haproxy}/exe").resolve().name == "haproxy"
        parent.kill()
        parent.wait(timeout=10)
        assert exited(haproxy), "HAProxy outlived the process that started it"
        # Its leader thread can be a zombie while its other threads still close the socket.
        deadline = time.monotonic() + 10
        while _listening(port):
            assert time.monotonic() < deadline, "HAProxy's port stayed bound after it died"
            time.sleep(0.05)
    finally:
        os.killpg(parent.pid, signal.SIGKILL)  # (whatever is left in its group)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


LOCAL = [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")]


def test_only_the_local_haproxys_own_hop_is_believed() -> None:
    # HAProxy appends the client's address: that last hop is the client.
    assert client_address("127.0.0.1", "203.0.113.5", [], LOCAL) == "203.0.113.5"
    # What a client sent itself comes before it and is not believed...
    assert client_address("127.0.0.1", "6.6.6.6, 203.0.113.5", [], LOCAL) == "203.0.113.5"
    # ...not even from a client on this node (its own hop is loopback, and stays so).
    assert client_address("127.0.0.1", "6.6.6.6, 127.0.0.1", [], LOCAL) == "127.0.0.1"
    # A peer that is not this node's HAProxy: the header means nothing.
    assert client_address("192.0.2.1", "6.6.6.6", [], LOCAL) == "192.0.2.1"
    # HAProxy without our lines (CERVER_HAPROXY_FORWARDS_FOR unset): the peer.
    assert client_address("127.0.0.1", "6.6.6.6", [], []) == "127.0.0.1"
    # No header (a health check, a process on the node calling the replica): the peer.
    assert client_address("127.0.0.1", None, [], LOCAL) == "127.0.0.1"
    # Behind the operator's load balancer (trusted) and then HAProxy: the LB's client.
    lb = [ipaddress.ip_network("10.0.0.0/24")]
    assert client_address("127.0.0.1", "198.51.100.1, 10.0.0.2", lb, LOCAL) == "198.51.100.1"
    assert client_address("127.0.0.1", "198.51.100.1, 10.0.0.9", [], LOCAL) == "10.0.0.9"


def test_client_key_reads_every_header_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from types import SimpleNamespace

    from starlette.requests import Request

    from cerver.config import Settings

    settings = Settings(home=tmp_path, database_url="sqlite://")
    app = SimpleNamespace(state=SimpleNamespace(ctx=SimpleNamespace(settings=settings)))

    def key(*forwarded: str) -> str:
        headers = [(b"x-forwarded-for", f.encode()) for f in forwarded]
        scope = {"type": "http", "app": app, "client": ("127.0.0.1", 4), "headers": headers}
        return client_key(Request(scope))

    monkeypatch.setenv(FORWARDS_FLAG, "1")
    local_haproxy.cache_clear()
    try:
        # HAProxy adds its own header line after the client's: the last line counts.
        assert key("6.6.6.6", "203.0.113.5") == "203.0.113.5"
        assert key("203.0.113.5") == "203.0.113.5"
        monkeypatch.setenv(FORWARDS_FLAG, "0")
        local_haproxy.cache_clear()
        assert key("6.6.6.6", "203.0.113.5") == "127.0.0.1"
    finally:
        local_haproxy.cache_clear()  # monkeypatch puts the environment back; read it again
