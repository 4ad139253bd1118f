"""The run hot path (issue 16): Server-Timing phases, the slot freed off the response path,
the answer only after the commit, and HAProxy as the front door."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest
import ray

from cerver.config import Settings
from cerver.serve_app.ingress import HAPROXY_FLAG
from cerver.serve_app.timing import parse as parse_server_timing

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

RUN_PHASES = {"auth", "session+admit", "route", "actor", "sandbox", "commit", "host", "app"}


def _runs_held(settings: Settings, account_id: str) -> int:
    from cerver.actors.account_limits import limits_handle

    return int(ray.get(limits_handle(settings).held.remote(account_id))["run"])


def _wait_runs_freed(settings: Settings, account_id: str) -> None:
    deadline = time.monotonic() + 10
    while _runs_held(settings, account_id) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _runs_held(settings, account_id) == 0


def test_a_run_says_where_its_time_went_and_is_stored_before_the_answer(
    api: httpx.Client,
    store,
    server_settings: Settings,  # type: ignore[no-untyped-def]
) -> None:
    sid = api.post("/v2/sessions", json={"compute": {"provider": "local"}}).json()["session_id"]
    for i in range(3):
        r = api.post(f"/v2/sessions/{sid}/run", json={"code": f"echo run-{i}"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["stdout"] == f"run-{i}\n"
        phases = parse_server_timing(r.headers["server-timing"])
        assert set(phases) >= RUN_PHASES, phases
        assert all(v >= 0 for k, v in phases.items() if k != "actor"), phases
        # The host's own phases fit inside the replica's whole time.
        assert phases["sandbox"] + phases["commit"] <= phases["app"]
        assert phases["sandbox"] >= body["duration_ms"] * 0.5
        # Acknowledged means committed: the entry is in the store as the answer arrives.
        entries, _more = store.sessions.transcript_page(
            sid, since=body["seq"] - 1, max_entries=1, max_bytes=1 << 20
        )
        assert [e.seq for e in entries] == [body["seq"]]
        assert entries[0].type == "exec"
        assert entries[0].content["result"]["stdout"] == f"run-{i}\n"
    account_id = store.accounts.get_or_create("alice").id
    _wait_runs_freed(server_settings, account_id)
    api.delete(f"/v2/sessions/{sid}")


def test_a_refused_run_frees_its_slot(
    api: httpx.Client,
    other_api: httpx.Client,
    store,
    server_settings: Settings,  # type: ignore[no-untyped-def]
) -> None:
    sid = api.post("/v2/sessions", json={"compute": {"provider": "local"}}).json()["session_id"]
    # Another account's session and a closed one: 404 and 409, and no slot left behind.
    r = other_api.post(f"/v2/sessions/{sid}/run", json={"code": "echo no"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    api.delete(f"/v2/sessions/{sid}")
    r = api.post(f"/v2/sessions/{sid}/run", json={"code": "echo closed"})
    assert r.status_code == 409, r.text
    for name in ("alice", "mallory"):
        _wait_runs_freed(server_settings, store.accounts.get_or_create(name).id)


def test_the_front_door_is_haproxy_with_files_of_its_own(
    server: str, server_settings: Settings
) -> None:
    if os.environ.get(HAPROXY_FLAG) != "1":
        pytest.skip("behind Serve's proxy (CERVER_SERVE_HAPROXY=0)")
    base = Path(os.environ["RAY_SERVE_HAPROXY_SERVER_STATE_BASE"])
    assert base != Path("/tmp/haproxy-serve")
    configs = list(base.glob("*/haproxy.cfg")) + list(base.glob("haproxy.cfg"))
    bind = f"bind 127.0.0.1:{server_settings.port}"
    assert any(bind in c.read_text() for c in configs), configs
    # Started through Cerver's launcher, which added its lines (the client's address).
    ours = next(c for c in configs if bind in c.read_text()).read_text()
    assert ours.count("option forwardfor") == 1
    assert httpx.get(f"{server}/healthz", timeout=10).json()["status"] == "ok"
