"""Escape probes against the real server (Ray Serve, real HTTP, bwrap sandboxes).

Each probe is what a hostile tenant or hostile code would try, and asserts the exact
outcome: refused with which status and error, or contained (with the measured bound)
and the server still answering. One module; the sandboxes are
shared by the probes that cannot harm each other, to keep it fast.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from cerver.config import Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
LOADER_VARS = ["LD_PRELOAD", "LD_LIBRARY_PATH", "GCONV_PATH", "MALLOC_CHECK_"]


def node_ip() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.123", 9))  # a UDP connect sends nothing
        return str(probe.getsockname()[0])


def make_sandbox(api: httpx.Client, **body: Any) -> str:
    r = api.post("/sandbox", json={"runtime": "python", **body})
    assert r.status_code == 200, r.text
    return str(r.json()["sandbox_id"])


def run(api: httpx.Client, sid: str, code: str, language: str = "shell", **kw: Any) -> dict:
    r = api.post(f"/sandbox/{sid}/run", json={"code": code, "language": language, **kw})
    assert r.status_code == 200, r.text
    return dict(r.json())


def still_answering(api: httpx.Client) -> None:
    assert api.get("/healthz").status_code == 200


@pytest.fixture(scope="module")
def client(server: str, token: str) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=server, headers={"Authorization": f"Bearer {token}"}, timeout=60
    ) as c:
        yield c


@pytest.fixture(scope="module")
def box(client: httpx.Client) -> Iterator[str]:
    sid = make_sandbox(client)
    yield sid
    client.delete(f"/sandbox/{sid}")


# --------------------------------------------------------------------------- finding 1


@pytest.mark.parametrize("name", LOADER_VARS)
def test_loader_variables_are_refused_on_every_route_with_env(
    client: httpx.Client, box: str, name: str
) -> None:
    env = {name: "./x.so"}
    answers = [
        client.post("/sandbox", json={"env": env}),
        client.post(f"/sandbox/{box}/run", json={"code": "true", "env": env}),
        client.post("/v2/sessions", json={"compute": {"provider": "local", "env": env}}),
    ]
    for r in answers:
        assert r.status_code == 422, r.text
        assert r.json()["error"]["code"] == "validation_error"
        assert f"environment variable {name} is refused" in r.json()["error"]["message"]


# --------------------------------------------------------------------------- finding 2


def test_a_tenant_cannot_choose_rlimits(client: httpx.Client) -> None:
    body = {"compute": {"provider": "local", "options": {"isolation": "rlimits"}}}
    r = client.post("/v2/sessions", json=body)
    if r.status_code == 201:  # a session provisions lazily: its first run is refused
        sid = r.json()["session_id"]
        r = client.post(f"/v2/sessions/{sid}/run", json={"code": "echo hi", "language": "shell"})
        client.delete(f"/v2/sessions/{sid}")
    assert r.status_code == 422, r.text
    assert "not a tenant option" in r.json()["error"]["message"]


# --------------------------------------------------------------------------- finding 3


def test_a_network_sandbox_reaches_neither_loopback_nor_the_node(
    client: httpx.Client, server: str
) -> None:
    port = int(server.rsplit(":", 1)[1])  # the gateway itself, on 127.0.0.1
    listener = socket.socket()
    listener.bind((node_ip(), 0))
    listener.listen()
    targets = [("127.0.0.1", port), listener.getsockname()[:2], ("169.254.169.254", 80)]
    code = (
        "import json, socket\nout = []\n"
        f"for host, port in {targets!r}:\n"
        "    try:\n        socket.create_connection((host, port), timeout=2); out.append('open')\n"
        "    except OSError as exc:\n        out.append(exc.errno)\n"
        "print(json.dumps(out))"
    )
    sid = make_sandbox(client, network=True)
    try:
        out = run(client, sid, code, "python")
        assert json.loads(out["output"]) == [111, 111, 22], out  # refused, refused, no route
    finally:
        listener.close()
        client.delete(f"/sandbox/{sid}")


# --------------------------------------------------------------------------- findings 4, 5


def test_the_supervisor_pipe_is_not_writable_from_user_code(client: httpx.Client, box: str) -> None:
    """The supervisor's pipe to the host is a socket (no open through /proc: ENXIO), and
    the supervisor is not dumpable to its runs (EACCES where it would be a pipe)."""
    out = run(client, box, "echo x > /proc/$PPID/fd/1 && echo WROTE || echo denied")
    assert out["output"] == "denied"
    assert "No such device or address" in out["error"] or "Permission denied" in out["error"]


def test_kill_stop_on_the_supervisor_is_bounded_and_later_runs_work(
    client: httpx.Client,
) -> None:
    sid = make_sandbox(client)
    try:
        started = time.monotonic()
        out = run(client, sid, "kill -STOP $PPID; sleep 100", timeout=2)
        assert time.monotonic() - started < 30  # 2 + 3 + 3, and slack for a loaded machine
        assert out["timed_out"] is True and out["exit_code"] == 124
        assert "did not answer a kill" in out["error"]
        assert run(client, sid, "echo again")["output"] == "again"
    finally:
        client.delete(f"/sandbox/{sid}")


# --------------------------------------------------------------------------- finding 8


def test_a_fifo_is_refused_by_the_files_api(client: httpx.Client, box: str) -> None:
    assert run(client, box, "mkfifo fifo && echo made")["output"] == "made"
    started = time.monotonic()
    r = client.get(f"/sandbox/{box}/files", params={"path": "fifo"})
    assert time.monotonic() - started < 15  # (it used to hang)
    assert r.status_code == 400 and "not a regular file" in r.json()["error"]["message"]


# --------------------------------------------------------------------------- reach


def test_another_sandboxs_workspace_is_not_reachable(
    client: httpx.Client, box: str, server_settings: Settings
) -> None:
    other = make_sandbox(client)
    try:
        r = client.put(f"/sandbox/{other}/files", params={"path": "secret.txt"}, content=b"S3CR3T")
        assert r.status_code == 200
        out = run(client, box, f"cat {server_settings.sandboxes_dir}/*/secret.txt; ls /")
        assert "S3CR3T" not in out["output"]
        assert "No such file or directory" in out["error"]
    finally:
        client.delete(f"/sandbox/{other}")


def test_the_store_file_is_not_reachable(
    client: httpx.Client, box: str, server_settings: Settings
) -> None:
    db = server_settings.home / "cerver.db"
    assert db.exists()
    out = run(client, box, f"head -c 16 {db}")
    assert "SQLite format" not in out["output"] and "No such file or directory" in out["error"]


def test_no_server_process_is_visible_or_signalable(client: httpx.Client, box: str) -> None:
    """Its own pid namespace: /proc holds the sandbox's processes only, none with the
    server's environment; ``kill -9 <server pid>`` names no such process inside."""
    me = os.getpid()
    code = (
        "ls /proc | grep -c '^[0-9]'; "
        "cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n' | grep -c '^RAY_\\|^CERVER_'; "
        f"kill -9 {me} 2>&1 | grep -c 'No such process'"
    )
    counts = [int(n) for n in run(client, box, code)["output"].split()]
    assert counts[0] < 12 and counts[1] == 0 and counts[2] == 1, counts
    assert os.getpid() == me  # (still here)
    still_answering(client)


def test_kill_minus_one_only_kills_the_sandbox(client: httpx.Client) -> None:
    sid = make_sandbox(client)
    try:
        out = run(client, sid, "kill -9 -1; sleep 5", timeout=10)
        assert out["exit_code"] != 0  # it killed its own run (and supervisor)
        still_answering(client)
        assert run(client, sid, "echo alive")["output"] == "alive"
    finally:
        client.delete(f"/sandbox/{sid}")


# --------------------------------------------------------------------------- resources


def test_fork_bomb_is_contained(client: httpx.Client) -> None:
    sid = make_sandbox(client)
    try:
        started = time.monotonic()
        out = run(client, sid, ":(){ :|:& };:", timeout=3)
        assert time.monotonic() - started < 30
        # the shell returns at once (the bomb is in the background); its group, with the
        # bomb, is emptied before the exit is reported
        assert out["exit_code"] == 0 and out["timed_out"] is False
        still_answering(client)
        left = run(client, sid, "ls /proc | grep -c '^[0-9]'")["output"]
        assert int(left) < 12, left  # bwrap's init, the supervisor, this shell, ls, grep
        assert run(client, sid, "echo after")["output"] == "after"
    finally:
        client.delete(f"/sandbox/{sid}")


def test_300_mb_of_output_is_capped(
    client: httpx.Client, box: str, server_settings: Settings
) -> None:
    out = run(client, box, "head -c 300000000 /dev/zero | tr '\\0' a", timeout=30)
    assert out["truncated"] is True and out["exit_code"] == 0
    assert len(out["output"].encode()) <= server_settings.output_limit_bytes + 200
    assert "output truncated" in out["output"]


def test_30_gb_allocation_fails_inside(client: httpx.Client, box: str) -> None:
    out = run(client, box, "b = bytearray(30 * 1024**3)", "python")
    assert out["exit_code"] == 1 and "MemoryError" in out["error"]
    still_answering(client)


def test_10000_files_stay_in_the_workspace(client: httpx.Client, box: str) -> None:
    code = "mkdir many && cd many && for i in $(seq 10000); do : > f$i; done; ls | wc -l"
    out = run(client, box, code, timeout=60)
    assert out["output"] == "10000"
    r = client.get(f"/sandbox/{box}/files", params={"path": "many/f9999"})
    assert r.status_code == 200 and r.content == b""
