"""The lower-level compute API (/sandbox) over real HTTP."""

from __future__ import annotations

import json
import time

import httpx
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@pytest.fixture
def sandbox(api: httpx.Client):  # type: ignore[no-untyped-def]
    r = api.post("/sandbox")
    assert r.status_code == 200, r.text
    sid = r.json()["sandbox_id"]
    yield sid
    api.delete(f"/sandbox/{sid}")


def test_create_without_body_and_run_python(api: httpx.Client, sandbox: str) -> None:
    info = api.get(f"/sandbox/{sandbox}").json()
    assert info["provider"] == "local" and info["runtime"] == "python"
    assert info["isolation"] in ("bwrap", "rlimits")
    r = api.post(f"/sandbox/{sandbox}/run", json={"code": "x = 10"})
    assert r.status_code == 200 and r.json()["exit_code"] == 0
    out = api.post(f"/sandbox/{sandbox}/run", json={"code": "print(x * 2)", "timeout": 5}).json()
    assert out["output"] == "20" and out["error"] == "" and out["duration"] > 0
    # It is a compute like any other.
    computes = api.get("/v2/computes").json()["computes"]
    assert any(c["compute_id"] == sandbox for c in computes)


def test_exception_and_timeout(api: httpx.Client, sandbox: str) -> None:
    api.post(f"/sandbox/{sandbox}/run", json={"code": "kept = 'yes'"})
    out = api.post(f"/sandbox/{sandbox}/run", json={"code": "1/0"}).json()
    assert out["exit_code"] != 0 and "ZeroDivisionError" in out["error"]
    out = api.post(
        f"/sandbox/{sandbox}/run", json={"code": "import time; time.sleep(60)", "timeout": 1}
    ).json()
    assert out["timed_out"] is True and "timed out" in out["error"]
    out = api.post(f"/sandbox/{sandbox}/run", json={"code": "print(kept)"}).json()
    assert out["output"] == "yes"


def test_stream(api: httpx.Client, sandbox: str) -> None:
    body = {"code": "import sys\nprint('a')\nprint('b', file=sys.stderr)", "stream": True}
    with api.stream("POST", f"/sandbox/{sandbox}/run", json=body) as r:
        assert r.status_code == 200
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    assert "".join(e["data"] for e in events if e["type"] == "stdout") == "a\n"
    assert "".join(e["data"] for e in events if e["type"] == "stderr") == "b\n"
    assert events[-1]["type"] == "exit"


def test_files_round_trip_and_escapes(api: httpx.Client, sandbox: str) -> None:
    blob = bytes(range(256)) * 100
    r = api.put(f"/sandbox/{sandbox}/files", params={"path": "data/blob.bin"}, content=blob)
    assert r.status_code == 200, r.text
    assert api.get(f"/sandbox/{sandbox}/files", params={"path": "data/blob.bin"}).content == blob
    out = api.post(
        f"/sandbox/{sandbox}/run",
        json={"code": "print(len(open('data/blob.bin','rb').read()))"},
    ).json()
    assert out["output"] == "25600"
    for bad in ("../escape.txt", "/etc/passwd", "a/../../x"):
        r = api.put(f"/sandbox/{sandbox}/files", params={"path": bad}, content=b"x")
        assert r.status_code == 400, (bad, r.text)
    api.post(
        f"/sandbox/{sandbox}/run",
        json={"code": "import os; os.symlink('/etc', 'out')", "language": "python"},
    )
    r = api.get(f"/sandbox/{sandbox}/files", params={"path": "out/hostname"})
    assert r.status_code == 400
    r = api.get(f"/sandbox/{sandbox}/files", params={"path": "missing.txt"})
    assert r.status_code == 404


def test_oversized_file_is_413(api: httpx.Client, sandbox: str, server_settings) -> None:  # type: ignore[no-untyped-def]
    big = b"x" * (server_settings.max_file_bytes + 10)
    r = api.put(f"/sandbox/{sandbox}/files", params={"path": "big.bin"}, content=big)
    assert r.status_code == 413
    r = api.get(f"/sandbox/{sandbox}/files", params={"path": "big.bin"})
    assert r.status_code == 404


def test_state(api: httpx.Client, sandbox: str) -> None:
    r = api.put(f"/sandbox/{sandbox}/state", json={"state": {"step": 3}})
    assert r.status_code == 200
    state = api.get(f"/sandbox/{sandbox}/state").json()
    assert state["status"] == "running" and state["user_state"] == {"step": 3}


def test_install_refuses_options_and_urls(api: httpx.Client, sandbox: str) -> None:
    for bad in ("--index-url http://evil/simple six", "https://evil/x.whl", "six; rm -rf /"):
        r = api.post(f"/sandbox/{sandbox}/install", json={"package": bad})
        assert r.status_code == 400, (bad, r.text)


def test_delete_then_run_and_other_accounts(api: httpx.Client, other_api: httpx.Client) -> None:
    sid = api.post("/sandbox").json()["sandbox_id"]
    assert other_api.post(f"/sandbox/{sid}/run", json={"code": "print(1)"}).status_code == 404
    assert other_api.delete(f"/sandbox/{sid}").status_code == 404
    assert api.delete(f"/sandbox/{sid}").status_code == 200
    assert api.delete(f"/sandbox/{sid}").status_code == 200  # twice is fine
    r = api.post(f"/sandbox/{sid}/run", json={"code": "print(1)"})
    assert r.status_code == 404 and "deleted" in r.json()["error"]["message"]


def test_session_adopts_a_sandbox(api: httpx.Client) -> None:
    sid = api.post("/sandbox").json()["sandbox_id"]
    api.put(f"/sandbox/{sid}/files", params={"path": "hello.txt"}, content=b"from sandbox")
    r = api.post("/v2/sessions", json={"compute": {"compute_id": sid}})
    assert r.status_code == 201, r.text
    session = r.json()
    assert session["compute_id"] == sid
    out = api.post(
        f"/v2/sessions/{session['session_id']}/run",
        json={"code": "cat hello.txt", "language": "shell"},
    ).json()
    assert out["stdout"] == "from sandbox"
    # While attached, the raw API points at the session.
    r = api.post(f"/sandbox/{sid}/run", json={"code": "print(1)"})
    assert r.status_code == 409 and session["session_id"] in r.json()["error"]["message"]
    api.delete(f"/v2/sessions/{session['session_id']}")


def test_long_runs_do_not_hold_up_other_calls(api: httpx.Client, server: str, token: str) -> None:
    # More long runs in flight than Serve's default per-replica limit (5): a short call made
    # while they run must be answered while they are still running, not queued behind them.
    from concurrent.futures import ThreadPoolExecutor

    ids = []
    for _ in range(7):
        r = api.post("/sandbox")
        assert r.status_code == 200, r.text
        ids.append(r.json()["sandbox_id"])
    headers = {"Authorization": f"Bearer {token}"}

    def long_run(sid: str) -> int:
        with httpx.Client(base_url=server, headers=headers, timeout=60) as client:
            r = client.post(f"/sandbox/{sid}/run", json={"code": "import time; time.sleep(6)"})
            return r.status_code

    try:
        with ThreadPoolExecutor(len(ids)) as pool:
            runs = [pool.submit(long_run, sid) for sid in ids]
            time.sleep(1.5)
            r = api.get(f"/sandbox/{ids[0]}")
            assert r.status_code == 200, r.text
            assert not any(run.done() for run in runs), "the short call waited for the long runs"
            assert [run.result() for run in runs] == [200] * len(ids)
    finally:
        for sid in ids:
            api.delete(f"/sandbox/{sid}")
