"""`cerver serve` and `cerver token create` as a user runs them: a real process, its own Ray,
its own CERVER_HOME; SIGTERM leaves no process behind."""

from __future__ import annotations

import os
import subprocess

import httpx
import pytest

from tests.conftest import free_port, make_home
from tests.serve_process import CERVER, descendants, leftovers, start_server, stop_server

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]


def test_serve_flow_and_clean_shutdown() -> None:
    home, port = make_home(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env |= {"CERVER_HOME": str(home), "CERVER_RAY_NAMESPACE": "cli-test"}
    proc, token = start_server(env, port)
    try:
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
        stop_server(proc)
    assert not leftovers(tree), "processes left behind"
    # The token is stored hashed, never in clear.
    assert token.encode() not in (home / "cerver.db").read_bytes()
