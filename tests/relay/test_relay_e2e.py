"""The relay end to end: real `cerver serve` (2 ingress replicas) and real `cerver relay`
processes on loopback. Logins are approved through the API, runs go through sessions."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.relay.procs import Gateway, Relay, login, wait_status
from tests.serve_process import CERVER

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HOST = {
    "hostname": "h",
    "os": "o",
    "cpu_count": 1,
    "memory_mb": 1,
    "max_concurrent_runs": 1,
    "network_allowed": False,
    "isolation": "x",
    "version": "v",
}


@pytest.fixture(scope="module")
def gw() -> Iterator[Gateway]:
    gateway = Gateway()
    gateway.start()
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def host(gw: Gateway) -> Iterator[tuple[Relay, str, str]]:
    relay = Relay(gw.url)
    compute_id = login(gw, relay)
    replica = relay.seen[-1].rsplit("(replica ", 1)[1].rstrip(")")
    yield relay, compute_id, replica
    relay.kill()


def _session(api: httpx.Client, compute: dict) -> str:
    created = api.post("/v2/sessions", json={"compute": compute})
    assert created.status_code == 201, created.text
    return str(created.json()["session_id"])


def _run(api: httpx.Client, sid: str, code: str, language: str = "shell", **kw) -> httpx.Response:
    return api.post(f"/v2/sessions/{sid}/run", json={"code": code, "language": language, **kw})


def _credential(relay: Relay) -> str:
    return str(json.loads((relay.home / "credential.json").read_text())["credential"])


async def _socket_close(url: str, credential: str, *frames: str) -> tuple[int | None, str]:
    """Connect as a relay, send ``frames`` after hello, answer the close code and reason."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    hello = {"type": "hello", "host": HOST}
    ws_url = url.replace("http://", "ws://") + "/v2/relay/connect"
    async with connect(
        ws_url, additional_headers={"Authorization": f"Bearer {credential}"}, max_size=None
    ) as ws:
        try:
            await ws.send(json.dumps(hello))
            for frame in frames:
                await ws.send(frame)
            while True:
                await asyncio.wait_for(ws.recv(), 15)
        except ConnectionClosed:
            pass
        return ws.close_code, ws.close_reason


def _api_login(gw: Gateway) -> tuple[str, str]:
    """A device login done with plain HTTP (no relay process): credential, compute id."""
    with httpx.Client(base_url=gw.url, timeout=30) as anon, gw.api() as api:
        grant = anon.post("/v2/relay/device", json={"host": HOST}).json()
        assert api.post("/v2/relay/approve", json={"code": grant["user_code"]}).status_code == 200
        time.sleep(grant["interval"])
        token = anon.post("/v2/relay/token", json={"device_code": grant["device_code"]})
    assert token.status_code == 200, token.text
    return token.json()["access_token"], token.json()["compute_id"]


# This first test also starts the module's gateway (up to a minute on a loaded machine).
@pytest.mark.timeout(150)
def test_an_approved_relay_is_an_online_compute_with_a_private_credential(
    gw: Gateway, host: tuple[Relay, str, str]
) -> None:
    relay, compute_id, _ = host
    row = wait_status(gw, compute_id, "online")
    assert row["provider"] == "relay"
    assert row["host_name"] and row["os"] and row["cpu_count"] >= 1 and row["memory_mb"] > 0
    assert row["last_seen"] > time.time() - 30
    cred_file = relay.home / "credential.json"
    assert stat.S_IMODE(os.stat(cred_file).st_mode) == 0o600
    credential = _credential(relay)
    # The relay credential serves as that compute only: every API route refuses it.
    with httpx.Client(base_url=gw.url, headers={"Authorization": f"Bearer {credential}"}) as c:
        for method, path in [("GET", "/v2/computes"), ("GET", "/v2/sessions"),
                             ("POST", "/sandbox")]:  # fmt: skip
            assert c.request(method, path).status_code == 401, path
    # A second relay with the same credential is refused with the reason.
    code, reason = asyncio.run(_socket_close(gw.url, credential))
    assert code == 4409 and "already connected" in reason
    assert relay.proc.poll() is None
    wait_status(gw, compute_id, "online")


@pytest.mark.timeout(60)
def test_sessions_run_shell_python_node_and_stream_on_the_relay_from_either_replica(
    gw: Gateway, host: tuple[Relay, str, str]
) -> None:
    _, compute_id, socket_replica = host
    with gw.api() as api:
        sid = _session(api, {"compute_id": compute_id, "runtime": "python"})
        first = _run(api, sid, "x = 41", "python")
        assert first.status_code == 200, first.text
        assert first.json()["provider"] == "relay"
        answered = {first.headers["x-cerver-replica"]}
        got = _run(api, sid, "print(x + 1)", "python").json()
        assert got["stdout"] == "42\n" and not got["interpreter_restarted"]
        assert _run(api, sid, "echo $((6 * 7))").json()["stdout"] == "42\n"
        assert _run(api, sid, "console.log(6 * 7)", "node").json()["stdout"] == "42\n"
        # Runs land on both replicas; the relay's socket is on one of them.
        for _ in range(30):
            if len(answered) == 2:
                break
            answer = _run(api, sid, "echo again")
            assert answer.json()["stdout"] == "again\n"
            answered.add(answer.headers["x-cerver-replica"])
        assert answered - {socket_replica}, f"no run answered away from {socket_replica}"
        streamed = api.post(
            f"/v2/sessions/{sid}/run",
            json={
                "code": "for i in 1 2 3; do echo line$i; sleep 0.2; done",
                "language": "shell",
                "stream": True,
            },
        )
        assert streamed.status_code == 200
        assert streamed.headers["x-cerver-provider"] == "relay"
        events = [json.loads(line[6:]) for line in streamed.text.splitlines()
                  if line.startswith("data: ")]  # fmt: skip
        out = "".join(e.get("data", "") for e in events if e.get("type") == "stdout")
        assert out == "line1\nline2\nline3\n"
        assert events[-1]["type"] == "exit" and events[-1]["result"]["exit_code"] == 0
        # {"provider": "relay"} picks the account's online relay.
        picked = api.post("/v2/sessions", json={"compute": {"provider": "relay"}})
        assert picked.status_code == 201 and picked.json()["provider"] == "relay"
        assert _run(api, picked.json()["session_id"], "echo picked").json()["stdout"] == "picked\n"


@pytest.mark.timeout(60)
def test_device_login_errors_follow_rfc_8628(gw: Gateway) -> None:
    with httpx.Client(base_url=gw.url, timeout=30) as anon, gw.api() as api:
        grant = anon.post("/v2/relay/device", json={"host": HOST}).json()
        assert len(grant["user_code"]) == 9 and grant["user_code"][4] == "-"
        poll = {"device_code": grant["device_code"]}
        pending = anon.post("/v2/relay/token", json=poll)
        assert pending.status_code == 400
        assert pending.json()["error"]["code"] == "authorization_pending"
        fast = anon.post("/v2/relay/token", json=poll)
        assert fast.json()["error"]["code"] == "slow_down"
        assert fast.json()["error"]["details"]["interval"] == grant["interval"] + 5
        wrong = api.post("/v2/relay/approve", json={"code": "BBBB-BBBB"})
        assert wrong.status_code == 400 and "check the code" in wrong.json()["error"]["message"]
        assert api.post("/v2/relay/approve", json={"code": grant["user_code"]}).status_code == 200
        reused = api.post("/v2/relay/approve", json={"code": grant["user_code"]})
        assert reused.status_code == 400 and "already used" in reused.json()["error"]["message"]
        assert anon.post("/v2/relay/approve", json={"code": "x"}).status_code == 401
        unknown = anon.post("/v2/relay/token", json={"device_code": "nope"})
        assert unknown.json()["error"]["code"] == "invalid_grant"


@pytest.mark.timeout(60)
def test_bad_frames_close_the_socket_with_a_reason_and_the_gateway_stays_up(gw: Gateway) -> None:
    credential, compute_id = _api_login(gw)

    def closed_by(frame: str, as_: str = credential) -> tuple[int, str]:
        # The gateway marks the host offline as it finishes the closed socket's handler,
        # which may be a moment after the client read the close frame; a socket opened
        # before that is a duplicate (4409), so each bad frame waits for it.
        closed = asyncio.run(_socket_close(gw.url, as_, frame))
        assert wait_status(gw, compute_id, "offline", timeout_s=10)["status"] == "offline"
        return closed

    code, reason = closed_by("{not json")
    assert code == 1007 and "malformed" in reason
    code, reason = closed_by(json.dumps({"type": "nope"}))
    assert code == 1007
    code, reason = closed_by(json.dumps({"type": "pong", "pad": "x" * (2 * 1024 * 1024)}))
    assert code == 1009 and "limit" in reason
    code, reason = closed_by("{}", as_="crl_forged")
    assert code == 4401 and "log in again" in reason
    with gw.api() as api:
        assert api.get("/healthz").status_code == 200


@pytest.mark.timeout(60)
def test_a_dead_relay_is_offline_its_runs_move_with_fallback_and_it_comes_back(
    gw: Gateway,
) -> None:
    relay = Relay(gw.url)
    try:
        compute_id = login(gw, relay)
        with gw.api() as api:
            keep = _session(api, {"compute_id": compute_id, "runtime": "python"})
            assert _run(api, keep, "kept = 1", "python").status_code == 200
            sid = _session(api, {"compute_id": compute_id})
            assert _run(api, sid, "echo up").json()["stdout"] == "up\n"
            # A run in flight when the relay dies: 503 compute_lost, nothing acknowledged.
            answers: list[httpx.Response] = []
            slow = threading.Thread(target=lambda: answers.append(_run(api, sid, "sleep 20")))
            slow.start()
            time.sleep(1.5)
            relay.kill()
            slow.join(30)
            assert answers and answers[0].status_code == 503, answers[0].text
            assert answers[0].json()["error"]["code"] == "compute_lost"
            wait_status(gw, compute_id, "offline", timeout_s=5)  # dropped: offline at once
            offline = _run(api, sid, "echo x")
            assert offline.status_code == 409
            error = offline.json()["error"]
            assert error["code"] == "compute_offline"
            assert error["details"]["recommendation"]["recommended_provider"] == "local"
            created = api.post("/v2/sessions", json={"compute": {"compute_id": compute_id}})
            assert created.status_code == 409
            assert created.json()["error"]["code"] == "compute_offline"
            moved = _run(api, sid, "echo moved", fallback=True)
            assert moved.status_code == 200, moved.text
            assert moved.json()["provider"] == "local" and moved.json()["stdout"] == "moved\n"
            entries = api.get(f"/v2/sessions/{sid}", params={"full": 1}).json()["transcript"]
            assert any(
                e["type"] == "compute" and e["content"].get("event") == "attached"
                and e["content"]["reason"].startswith("fallback:")
                for e in entries
            )  # fmt: skip
            # The one failover flag of a create is the top-level "fallback"; its old name,
            # compute.fallback, still works (docs/sessions.md).
            for body in (
                {"compute": {"compute_id": compute_id}, "fallback": True},
                {"compute": {"compute_id": compute_id, "fallback": True}},
            ):
                fresh = api.post("/v2/sessions", json=body)
                assert fresh.status_code == 201 and fresh.json()["provider"] == "local", body
        # Started again with its state: the same compute, no new login.
        again = Relay(gw.url, relay.home)
        try:
            again.wait_for(f"Connected as compute {compute_id}")
            assert not any(line.startswith("User code") for line in again.seen)
            with gw.api() as api:
                # The session on it runs again; its interpreter state is gone, and says so.
                back = _run(api, keep, "print('kept' in globals())", "python").json()
                assert back["stdout"] == "False\n" and back["interpreter_restarted"] is True
                entries = api.get(f"/v2/sessions/{keep}", params={"full": 1}).json()
                assert entries["transcript"][-1]["content"]["result"]["interpreter_restarted"]
        finally:
            again.kill()
    finally:
        relay.kill()


@pytest.mark.timeout(60)
def test_logout_revokes_the_credential(gw: Gateway) -> None:
    relay = Relay(gw.url)
    try:
        compute_id = login(gw, relay)
        credential = _credential(relay)
    finally:
        relay.kill()
    import subprocess

    env = dict(os.environ, CERVER_RELAY_HOME=str(relay.home))
    out = subprocess.run([CERVER, "relay", "logout"], env=env, capture_output=True, text=True,
                         timeout=30)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "revoked" in out.stdout
    assert not Path(relay.home / "credential.json").exists()
    code, _ = asyncio.run(_socket_close(gw.url, credential))
    assert code == 4401
    with gw.api() as api:
        ids = [r["compute_id"] for r in api.get("/v2/computes").json()["computes"]]
    assert compute_id not in ids


@pytest.mark.timeout(120)
def test_the_relay_comes_back_within_ten_seconds_of_a_gateway_restart(
    gw: Gateway, host: tuple[Relay, str, str]
) -> None:
    """Stopping and starting `cerver serve` takes most of this test's time (two Ray starts)."""
    relay, compute_id, _ = host
    with gw.api() as api:
        sid = _session(api, {"compute_id": compute_id, "runtime": "python"})
        before = _run(api, sid, "print('before')", "python").json()
        assert before["stdout"] == "before\n"
    gw.stop()
    relay.wait_for("Disconnected", timeout_s=10)
    gw.start()
    listening = time.monotonic()
    relay.wait_for(f"Connected as compute {compute_id}", timeout_s=10)
    assert time.monotonic() - listening < 10
    with gw.api() as api:
        wait_status(gw, compute_id, "online", timeout_s=5)
        after = _run(api, sid, "print('after')", "python")
        assert after.status_code == 200, after.text
        assert after.json()["stdout"] == "after\n" and after.json()["provider"] == "relay"
        assert after.json()["seq"] > before["seq"]  # the same session and transcript


@pytest.mark.timeout(60)
def test_the_account_revokes_a_host_and_the_relay_stops(gw: Gateway) -> None:
    relay = Relay(gw.url)
    try:
        compute_id = login(gw, relay)
        with gw.api() as api:
            assert api.delete(f"/v2/relay/{compute_id}").status_code == 200
            again = api.delete(f"/v2/relay/{compute_id}")
            assert again.status_code == 404
        assert relay.proc.wait(timeout=30) == 3  # refused at its reconnect: log in again
        assert not (relay.home / "credential.json").exists()
    finally:
        relay.kill()


@pytest.mark.timeout(150)  # may start the module's gateway when run alone
def test_cerver_relay_approve_approves_a_code_from_the_command_line(gw: Gateway) -> None:
    import subprocess

    with httpx.Client(base_url=gw.url, timeout=30) as anon:
        grant = anon.post("/v2/relay/device", json={"host": HOST}).json()
    env = dict(os.environ, CERVER_API_TOKEN=gw.token)
    approve = [CERVER, "relay", "--gateway", gw.url, "approve", grant["user_code"]]
    done = subprocess.run(approve, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Approved: compute cmp_")
    again = subprocess.run(approve, env=env, capture_output=True, text=True, timeout=30)
    assert again.returncode == 1 and "already used" in again.stderr
    # The token never shows in what the command printed.
    assert gw.token not in done.stdout + done.stderr + again.stdout + again.stderr
