"""Per-account caps (issue 10, finding 6, API part): live computes, open sessions and
concurrent runs, over real HTTP against the `capped` app (tests/integration/conftest.py)."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
import ray

from cerver.config import Settings
from tests.integration.conftest import capped_client

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


@pytest.fixture
def capped(server: str, capped_settings: Settings, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    # A fresh account per test: every test starts with nothing live.
    with capped_client(server, capped_settings, request.node.name[:60]) as client:
        yield client


def _assert_limit(r: httpx.Response, limit: str, setting: str) -> None:
    assert r.status_code == 429, r.text
    assert int(r.headers["Retry-After"]) >= 1
    error = r.json()["error"]
    assert error["code"] == "limit_reached"
    assert error["details"]["limit"] == limit and error["details"]["setting"] == setting
    assert limit in error["message"] and setting in error["message"]


def test_live_computes_cap_counts_sandboxes_and_session_computes(capped: httpx.Client) -> None:
    first = capped.post("/sandbox").json()["sandbox_id"]
    session = capped.post("/v2/sessions", json={"compute": {"provider": "local"}})
    assert session.status_code == 201, session.text
    # Two live computes: a third, by either route, is refused and leaves nothing behind.
    _assert_limit(
        capped.post("/sandbox"), "max_computes_per_account", "CERVER_MAX_COMPUTES_PER_ACCOUNT"
    )
    before = len(capped.get("/v2/sessions").json()["sessions"])
    refused = capped.post("/v2/sessions", json={"compute": {"provider": "local"}})
    _assert_limit(refused, "max_computes_per_account", "CERVER_MAX_COMPUTES_PER_ACCOUNT")
    assert len(capped.get("/v2/sessions").json()["sessions"]) == before  # no half-made session
    assert len(capped.get("/v2/computes").json()["computes"]) == 2
    # A swap replaces the session's compute: it does not need a third slot.
    sid = session.json()["session_id"]
    swapped = capped.post(f"/v2/sessions/{sid}/compute", json={"compute": {"provider": "local"}})
    assert swapped.status_code == 200, swapped.text
    # Freeing one makes room again.
    assert capped.delete(f"/sandbox/{first}").status_code == 200
    again = capped.post("/sandbox")
    assert again.status_code == 200, again.text
    capped.delete(f"/sandbox/{again.json()['sandbox_id']}")
    capped.delete(f"/v2/sessions/{sid}")


def test_open_sessions_cap(capped: httpx.Client) -> None:
    made = [capped.post("/v2/sessions", json={"compute": None}) for _ in range(3)]
    assert [r.status_code for r in made] == [201, 201, 201]
    refused = capped.post("/v2/sessions", json={"compute": None})
    _assert_limit(refused, "max_open_sessions_per_account", "CERVER_MAX_OPEN_SESSIONS_PER_ACCOUNT")
    assert len(capped.get("/v2/sessions").json()["sessions"]) == 3
    capped.delete(f"/v2/sessions/{made[0].json()['session_id']}")
    assert capped.post("/v2/sessions", json={"compute": None}).status_code == 201


def _runs_held(settings: Settings, account_id: str) -> int:
    from cerver.actors.account_limits import limits_handle

    return int(ray.get(limits_handle(settings).held.remote(account_id))["run"])


def test_concurrent_runs_cap_holds_across_processes(
    capped: httpx.Client, capped_settings: Settings
) -> None:
    from cerver.actors.account_limits import limits_handle
    from cerver.store import Store

    sandbox = capped.post("/sandbox").json()["sandbox_id"]
    session = capped.post("/v2/sessions", json={"compute": {"provider": "local"}}).json()
    run_url = f"/v2/sessions/{session['session_id']}/run"
    account_id = Store.open(capped_settings.database_url).computes.get(sandbox).account_id
    slow: dict[str, httpx.Response] = {}

    def long_run() -> None:
        slow["r"] = capped.post(
            f"/sandbox/{sandbox}/run", json={"code": "import time; time.sleep(3)", "timeout": 20}
        )

    worker = threading.Thread(target=long_run)
    worker.start()
    for _ in range(100):  # until the slow run holds the account's one slot
        if _runs_held(capped_settings, account_id) == 1:
            break
        time.sleep(0.05)
    refused = capped.post(run_url, json={"code": "echo hi"})
    worker.join(timeout=60)
    _assert_limit(
        refused, "max_concurrent_runs_per_account", "CERVER_MAX_CONCURRENT_RUNS_PER_ACCOUNT"
    )
    assert slow["r"].status_code == 200 and slow["r"].json()["exit_code"] == 0
    assert _runs_held(capped_settings, account_id) == 0  # freed when the run answered
    ok = capped.post(run_url, json={"code": "echo hi"})
    assert ok.status_code == 200 and ok.json()["stdout"] == "hi\n"
    # The count lives in one named actor, not in a replica: a slot taken from another
    # process (this test's driver, standing in for a second replica) blocks the HTTP run.
    lease = ray.get(limits_handle(capped_settings).start_run.remote(account_id, 30.0))
    try:
        r = capped.post(f"/sandbox/{sandbox}/run", json={"code": "print(1)"})
        _assert_limit(
            r, "max_concurrent_runs_per_account", "CERVER_MAX_CONCURRENT_RUNS_PER_ACCOUNT"
        )
    finally:
        ray.get(limits_handle(capped_settings).done.remote(lease))
    assert capped.post(f"/sandbox/{sandbox}/run", json={"code": "print(1)"}).status_code == 200
    # A stream holds the slot until it ends, and frees it after.
    body = {"code": "print(2)", "stream": True}
    with capped.stream("POST", f"/sandbox/{sandbox}/run", json=body) as streamed:
        assert streamed.status_code == 200
        assert "event: exit" in "".join(streamed.iter_text())
    assert _runs_held(capped_settings, account_id) == 0
    assert capped.post(f"/sandbox/{sandbox}/run", json={"code": "print(3)"}).status_code == 200
    capped.delete(f"/sandbox/{sandbox}")
    capped.delete(f"/v2/sessions/{session['session_id']}")
