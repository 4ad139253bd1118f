"""Bring-your-own Daytona through the real server (Ray + Serve) and the Daytona fake
(tests/fakes/daytona.py, driven by the official SDK inside the session hosts):
registration, a session on daytona (runs, stream, files, hibernate and wake), the swap
from local carrying the workspace, and delete releasing the remote sandbox."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
import ray

from cerver.config import Settings
from cerver.store import Store

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

KEY = "daytona-secret-value-5e1f"
REJECTED = "rejected-daytona-key"  # the shared fake refuses it (tests/conftest.py)
SSE = {"Accept": "text/event-stream"}


@pytest.fixture
def cloud(
    server: str, daytona_fake: str, store: Store, request: pytest.FixtureRequest
) -> Iterator[httpx.Client]:
    """A fresh account per test, with daytona registered through the API."""
    account = store.accounts.get_or_create(f"daytona-{request.node.name}"[:190])
    token = store.accounts.issue_token(account.id)
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=server, headers=headers, timeout=90) as client:
        body = {"provider": "daytona", "credentials": {"daytona_api_key": KEY}}
        registered = client.post("/v2/account/providers", json=body)
        assert registered.status_code == 201, registered.text
        assert registered.json()["fields"] == ["daytona_api_key"] and KEY not in registered.text
        yield client


def _received(daytona_fake: str) -> list[dict]:
    return list(httpx.get(f"{daytona_fake.removesuffix('/api')}/_fake/requests").json())


def _sandbox_id(cloud: httpx.Client, sid: str) -> str:
    mine = [c for c in cloud.get("/v2/computes").json()["computes"] if c["session_id"] == sid]
    assert mine and mine[0]["provider"] == "daytona", mine
    return str(mine[0]["sandbox_id"])


def test_a_refused_key_is_422_and_stores_nothing(
    server: str, daytona_fake: str, store: Store
) -> None:
    account = store.accounts.get_or_create("daytona-refused")
    headers = {"Authorization": f"Bearer {store.accounts.issue_token(account.id)}"}
    with httpx.Client(base_url=server, headers=headers, timeout=60) as client:
        body = {"provider": "daytona", "credentials": {"daytona_api_key": REJECTED}}
        refused = client.post("/v2/account/providers", json=body)
        assert refused.status_code == 422, refused.text
        assert REJECTED not in refused.text and "refused" in refused.json()["error"]["message"]
        assert client.get("/v2/account/providers").json() == {"providers": []}
        missing = client.post(
            "/v2/account/providers", json={"provider": "daytona", "credentials": {}}
        )
        assert missing.status_code == 422
        assert missing.json()["error"]["details"]["field"] == "credentials.daytona_api_key"
        pinned = client.post("/v2/sessions", json={"compute": {"provider": "daytona"}})
        assert pinned.status_code == 409, pinned.text  # nothing registered: not executable
    assert any(r["key"] == REJECTED for r in _received(daytona_fake))


def test_session_on_daytona(cloud: httpx.Client, daytona_fake: str) -> None:
    created = cloud.post("/v2/sessions", json={"compute": {"provider": "daytona"}})
    assert created.status_code == 201, created.text
    view = created.json()
    assert view["provider"] == "daytona" and view["runtime"] == "python", view
    sid = view["session_id"]
    run = f"/v2/sessions/{sid}/run"
    assert cloud.post(run, json={"code": "n = 20"}).json()["exit_code"] == 0
    kept = cloud.post(run, json={"code": "print(n + 1)"}).json()
    assert kept["stdout"] == "21\n" and kept["provider"] == "daytona", kept
    # The runtime is python; code that is not python runs as shell.
    assert cloud.post(run, json={"code": "echo from shell"}).json()["stdout"] == "from shell\n"
    node = cloud.post(run, json={"code": "console.log('hi')", "language": "node"}).json()
    assert node["stdout"] == "hi\n", node
    with cloud.stream("POST", run, json={"code": "echo a; echo b >&2", "language": "shell"},
                      headers=SSE) as r:  # fmt: skip
        assert r.status_code == 200 and r.headers["X-Cerver-Provider"] == "daytona"
        events = [json.loads(x[6:]) for x in r.iter_lines() if x.startswith("data: ")]
    assert "".join(e["data"] for e in events if e["type"] == "stdout") == "a\n"
    assert "".join(e["data"] for e in events if e["type"] == "stderr") == "b\n"
    assert events[-1]["type"] == "exit" and events[-1]["result"]["exit_code"] == 0

    sandbox_id = _sandbox_id(cloud, sid)
    assert cloud.delete(f"/v2/sessions/{sid}").status_code == 200
    seen = _received(daytona_fake)
    ours = [r for r in seen if sandbox_id in r["path"]]
    assert ours and all(r["key"] == KEY for r in ours)
    creates = [r for r in seen if r["method"] == "POST" and r["path"] == "/api/sandbox"]
    assert any(r["key"] == KEY and r["body"]["labels"].get("cerver_account") for r in creates)
    # Deleting the session released the remote sandbox.
    assert ("DELETE", f"/api/sandbox/{sandbox_id}") in [(r["method"], r["path"]) for r in seen]
    assert httpx.get(f"{daytona_fake}/sandbox/{sandbox_id}", headers={
        "Authorization": f"Bearer {KEY}"}).status_code == 404  # fmt: skip
    transcript = cloud.get(f"/v2/sessions/{sid}?full=1").text
    assert KEY not in transcript


def test_hibernate_stops_the_sandbox_and_the_next_run_starts_it(
    cloud: httpx.Client, daytona_fake: str, server_settings: Settings
) -> None:
    sid = cloud.post("/v2/sessions", json={"compute": {"provider": "daytona"}}).json()["session_id"]
    run = f"/v2/sessions/{sid}/run"
    cloud.post(run, json={"code": "echo kept > file.txt", "language": "shell"})
    sandbox_id = _sandbox_id(cloud, sid)
    directory = ray.get_actor("cerver-session-directory", namespace=server_settings.ray_namespace)
    host = ray.get(directory.lookup.remote(sid), timeout=30)
    assert host is not None
    ray.get(host.hibernate_now.remote(sid), timeout=60)
    stops = [r for r in _received(daytona_fake) if r["path"] == f"/api/sandbox/{sandbox_id}/stop"]
    assert len(stops) == 1 and stops[0]["key"] == KEY
    out = cloud.post(run, json={"code": "cat file.txt", "language": "shell"}).json()
    assert out["stdout"] == "kept\n", out
    starts = [r for r in _received(daytona_fake) if r["path"].endswith(f"{sandbox_id}/start")]
    assert len(starts) == 1
    assert cloud.delete(f"/v2/sessions/{sid}").status_code == 200


def test_swap_local_to_daytona_and_back_carries_files(
    cloud: httpx.Client, daytona_fake: str
) -> None:
    sid = cloud.post("/v2/sessions", json={"compute": {"provider": "local"}}).json()["session_id"]
    run = f"/v2/sessions/{sid}/run"
    setup = "mkdir -p notes && echo carried-over > notes/a.txt && echo two > b.txt"
    assert cloud.post(run, json={"code": setup}).json()["exit_code"] == 0

    swapped = cloud.post(f"/v2/sessions/{sid}/compute", json={"compute": {"provider": "daytona"}})
    assert swapped.status_code == 200, swapped.text
    sandbox_id = _sandbox_id(cloud, sid)
    there = cloud.post(run, json={"code": "cat notes/a.txt b.txt", "language": "shell"}).json()
    assert there["provider"] == "daytona" and there["stdout"] == "carried-over\ntwo\n", there
    cloud.post(run, json={"code": "echo made-on-daytona > c.txt", "language": "shell"})

    back = cloud.post(f"/v2/sessions/{sid}/compute", json={"compute": {"provider": "local"}})
    assert back.status_code == 200, back.text
    home = cloud.post(run, json={"code": "cat notes/a.txt c.txt"}).json()
    assert home["stdout"] == "carried-over\nmade-on-daytona\n", home

    transcript = cloud.get(f"/v2/sessions/{sid}?full=1").json()["transcript"]
    swaps = [e["content"] for e in transcript if e["content"].get("reason") == "swap"]
    assert [s["provider"] for s in swaps] == ["daytona", "local"]
    assert swaps[0]["workspace"]["carried"] is True and swaps[0]["workspace"]["files"] == 2
    # Swapping away released the daytona sandbox.
    seen = [(r["method"], r["path"]) for r in _received(daytona_fake)]
    assert ("DELETE", f"/api/sandbox/{sandbox_id}") in seen
    assert cloud.delete(f"/v2/sessions/{sid}").status_code == 200
