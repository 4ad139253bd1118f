"""Bring-your-own Vercel through the real server (Ray + Serve) and the Vercel fake: the
docs' quick-start copied verbatim (host changed), /v2/account/providers, and what a
session on vercel does when the provider misbehaves."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator

import httpx
import pytest

from cerver.store import Store

pytestmark = pytest.mark.timeout(180)

# From the docs ("Copy this first."), verbatim; the test replaces the host and SESSION_ID.
QUICKSTART_CREATE = """curl -X POST https://gateway.cerver.ai/v2/sessions \\
-H "Authorization: Bearer $CERVER_API_TOKEN" \\
-H "Content-Type: application/json" \\
-d '{
"session_name": "hello-cerver",
"compute": { "provider": "vercel" },
"harness": "openai"
}'"""
QUICKSTART_RUN = """curl -X POST https://gateway.cerver.ai/v2/sessions/SESSION_ID/run \\
-H "Authorization: Bearer $CERVER_API_TOKEN" \\
-H "Content-Type: application/json" \\
-d '{ "code": "echo hello from cerver" }'"""
QUICKSTART_METRICS = """curl https://gateway.cerver.ai/v2/sessions/SESSION_ID/metrics \\
-H "Authorization: Bearer $CERVER_API_TOKEN\""""
QUICKSTART_DELETE = """curl -X DELETE https://gateway.cerver.ai/v2/sessions/SESSION_ID \\
-H "Authorization: Bearer $CERVER_API_TOKEN\""""
# From "BYO cloud · register provider", with the value a real token would take.
REGISTER = {"provider": "vercel", "credentials": {"vercel_token": "..."}}

SECRET = "vercel-secret-value-0b5e2d"


def _client(server: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=server, headers={"Authorization": f"Bearer {token}"}, timeout=90)


@pytest.fixture
def account(store: Store, request: pytest.FixtureRequest) -> str:
    """A fresh account per test (registrations must not leak into other tests)."""
    found = store.accounts.get_or_create(f"cloud-{request.node.name}"[:190])
    return str(store.accounts.issue_token(found.id))


@pytest.fixture
def cloud(server: str, vercel_fake: str, account: str) -> Iterator[httpx.Client]:
    with _client(server, account) as client:
        yield client


def _received(vercel_fake: str) -> list[dict]:
    return list(httpx.get(f"{vercel_fake}/_fake/requests").json())


def _curl(command: str, server: str, token: str, session_id: str = "") -> dict:
    command = command.replace("https://gateway.cerver.ai", server)
    command = command.replace("SESSION_ID", session_id)
    env = {**os.environ, "CERVER_API_TOKEN": token}
    out = subprocess.run(
        ["bash", "-c", command + " -sS"], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout))


def test_quickstart_verbatim_on_vercel(
    server: str, vercel_fake: str, account: str, cloud: httpx.Client
) -> None:
    registered = cloud.post("/v2/account/providers", json=REGISTER)
    assert registered.status_code == 201, registered.text
    assert registered.json()["fields"] == ["vercel_token"]
    assert "..." not in registered.text

    created = _curl(QUICKSTART_CREATE, server, account)
    session_id = created["session_id"]
    assert created["provider"] == "vercel" and created["runtime"] == "node", created
    ran = _curl(QUICKSTART_RUN, server, account, session_id)
    assert ran["stdout"] == "hello from cerver\n", ran
    assert ran["exit_code"] == 0
    # The docs' node one-liner: a vercel session's runtime is node, and so is the run's.
    hi = cloud.post(f"/v2/sessions/{session_id}/run", json={"code": "console.log('hi')"})
    assert hi.status_code == 200 and hi.json()["stdout"] == "hi\n", hi.text
    metrics = _curl(QUICKSTART_METRICS, server, account, session_id)
    assert metrics["provider"] == "vercel", metrics
    assert metrics["metrics"]["total_exec_count"] == 2, metrics
    computes = cloud.get("/v2/computes").json()
    assert "vercel" in computes["executable_providers"]
    mine = [c for c in computes["computes"] if c["session_id"] == session_id]
    assert mine and mine[0]["provider"] == "vercel"
    sandbox_name = mine[0]["sandbox_id"]
    deleted = _curl(QUICKSTART_DELETE, server, account, session_id)
    assert deleted["status"] == "closed", deleted

    # What the fake received: the registered token on every call, the commands run, and
    # the sandbox destroyed when the session was deleted.
    seen = _received(vercel_fake)
    ours = [r for r in seen if sandbox_name in r["path"] or r.get("body", {}).get("args")]
    assert ours and all(r["token"] == "..." for r in ours)
    commands = [r["body"] for r in seen if r["path"].endswith("/cmd") and "body" in r]
    assert any("echo hello from cerver" in json.dumps(c) for c in commands)
    assert any(r["method"] == "DELETE" and r["path"].endswith(sandbox_name) for r in seen)


def test_providers_api_never_shows_a_value(
    cloud: httpx.Client, vercel_fake: str, server: str
) -> None:
    body = {"provider": "vercel", "credentials": {"vercel_token": SECRET, "vercel_team_id": "t1"}}
    assert cloud.post("/v2/account/providers", json=body).status_code == 201
    listed = cloud.get("/v2/account/providers")
    assert listed.status_code == 200 and SECRET not in listed.text
    (entry,) = listed.json()["providers"]
    assert entry["provider"] == "vercel"
    assert entry["fields"] == ["vercel_team_id", "vercel_token"]
    assert entry["created_at"] > 0 and entry["last_used_at"] is None
    assert any(r["token"] == SECRET for r in _received(vercel_fake))

    session = cloud.post("/v2/sessions", json={"compute": {"provider": "vercel"}})
    assert session.status_code == 201, session.text
    sid = session.json()["session_id"]
    assert cloud.post(f"/v2/sessions/{sid}/run", json={"code": "echo $HOME"}).status_code == 200
    transcript = cloud.get(f"/v2/sessions/{sid}?tail=100")
    assert SECRET not in transcript.text
    assert cloud.get("/v2/account/providers").json()["providers"][0]["last_used_at"] > 0

    # Deleting the registration while a session runs on it: 409 naming the session.
    busy = cloud.delete("/v2/account/providers/vercel")
    assert busy.status_code == 409 and sid in busy.json()["error"]["details"]["sessions"]
    assert cloud.delete(f"/v2/sessions/{sid}").status_code == 200
    gone = cloud.delete("/v2/account/providers/vercel")
    assert gone.status_code == 200, gone.text
    assert cloud.get("/v2/account/providers").json() == {"providers": []}
    assert cloud.delete("/v2/account/providers/vercel").status_code == 404


@pytest.mark.parametrize(
    "body,status,field",
    [
        ({"provider": "nimbus", "credentials": {"x": "y"}}, 400, None),
        ({"provider": "vercel", "credentials": {}}, 422, "credentials.vercel_token"),
        ({"provider": "vercel", "credentials": {"token": SECRET}}, 422, "credentials.token"),
        (
            {
                "provider": "vercel",
                "credentials": {"vercel_token": {"secret": "CERVER_SECRET_KEY"}},
            },
            422,
            "credentials.vercel_token",
        ),
        (
            {"provider": "vercel", "credentials": {"vercel_token": "rejected-vercel-token"}},
            422,
            None,
        ),
    ],
)
def test_bad_registrations(cloud: httpx.Client, body: dict, status: int, field: str | None) -> None:
    answer = cloud.post("/v2/account/providers", json=body)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    if status == 400:
        assert "vercel" in error["details"]["valid"]
    if field is not None:
        assert error["details"]["field"] == field
    assert SECRET not in answer.text and "rejected-vercel-token" not in answer.text
    assert cloud.get("/v2/account/providers").json() == {"providers": []}


def test_reference_resolves_in_the_session_host(cloud: httpx.Client, vercel_fake: str) -> None:
    # TEST_CLOUD_VERCEL_TOKEN is set for Ray's workers below (module import, before Ray).
    body = {"provider": "vercel", "credentials": {"vercel_token": {"secret": REF_NAME}}}
    assert cloud.post("/v2/account/providers", json=body).status_code == 201
    sid = cloud.post("/v2/sessions", json={"compute": {"provider": "vercel"}}).json()["session_id"]
    ran = cloud.post(f"/v2/sessions/{sid}/run", json={"code": "echo ok", "language": "shell"})
    assert ran.json()["stdout"] == "ok\n", ran.text
    assert any(r["token"] == REF_VALUE for r in _received(vercel_fake))
    assert cloud.delete(f"/v2/sessions/{sid}").status_code == 200


def test_provider_faults(cloud: httpx.Client, vercel_fake: str) -> None:
    body = {"provider": "vercel", "credentials": {"vercel_token": SECRET}}
    assert cloud.post("/v2/account/providers", json=body).status_code == 201
    sid = cloud.post("/v2/sessions", json={"compute": {"provider": "vercel"}}).json()["session_id"]
    run = f"/v2/sessions/{sid}/run"
    shell = {"code": "echo fine", "language": "shell"}

    def fault(**spec: object) -> None:
        httpx.post(f"{vercel_fake}/_fake/faults", json=spec).raise_for_status()

    # A rate limit passes through with Retry-After.
    fault(path="/sessions/", status=429, retry_after=7, count=1)
    limited = cloud.post(run, json=shell)
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "7", limited.text
    # An outage mid-run answers 502; the session stays usable.
    fault(path="/sessions/", status=503, count=1)
    down = cloud.post(run, json=shell)
    assert down.status_code == 502 and down.json()["error"]["code"] == "provider_error"
    assert cloud.post(run, json=shell).json()["stdout"] == "fine\n"

    # A sandbox deleted behind our back: that run fails, the next one gets a replacement
    # and the transcript says so.
    name = cloud.get("/v2/computes").json()["computes"][0]["sandbox_id"]
    httpx.post(f"{vercel_fake}/_fake/vanish/{name}").raise_for_status()
    lost = cloud.post(run, json=shell)
    assert lost.status_code == 502 and lost.json()["error"]["code"] == "sandbox_lost"
    again = cloud.post(run, json=shell)
    assert again.status_code == 200 and again.json()["stdout"] == "fine\n", again.text
    transcript = cloud.get(f"/v2/sessions/{sid}?tail=100").json()
    assert any(e["content"].get("event") == "sandbox_lost" for e in transcript["transcript"]), (
        transcript
    )

    # A key revoked at the provider: 502 provider_auth_failed, no secret in it; the
    # session stays usable once the key works again.
    httpx.post(f"{vercel_fake}/_fake/reject", json={"key": SECRET}).raise_for_status()
    refused = cloud.post(run, json=shell)
    assert refused.status_code == 502, refused.text
    assert refused.json()["error"]["code"] == "provider_auth_failed"
    assert SECRET not in refused.text
    assert SECRET not in cloud.get(f"/v2/sessions/{sid}?tail=100").text
    httpx.post(f"{vercel_fake}/_fake/reject", json={"key": SECRET, "undo": True})
    assert cloud.post(run, json=shell).json()["stdout"] == "fine\n"
    assert cloud.delete(f"/v2/sessions/{sid}").status_code == 200


REF_NAME = "TEST_CLOUD_VERCEL_TOKEN"
REF_VALUE = "token-from-the-environment-77"
# Ray workers inherit the driver's environment at ray.init (after collection).
os.environ.setdefault(REF_NAME, REF_VALUE)


def test_swap_local_to_vercel_and_back_carries_files(cloud: httpx.Client, vercel_fake: str) -> None:
    body = {"provider": "vercel", "credentials": {"vercel_token": SECRET}}
    assert cloud.post("/v2/account/providers", json=body).status_code == 201
    created = cloud.post("/v2/sessions", json={"compute": {"provider": "local"}})
    assert created.status_code == 201, created.text
    sid = created.json()["session_id"]
    run = f"/v2/sessions/{sid}/run"
    setup = "mkdir -p notes && echo carried-over > notes/a.txt && echo two > b.txt"
    assert cloud.post(run, json={"code": setup}).json()["exit_code"] == 0

    swapped = cloud.post(f"/v2/sessions/{sid}/compute", json={"compute": {"provider": "vercel"}})
    assert swapped.status_code == 200, swapped.text
    on_vercel = cloud.post(run, json={"code": "cat notes/a.txt b.txt", "language": "shell"})
    assert on_vercel.json()["provider"] == "vercel"
    assert on_vercel.json()["stdout"] == "carried-over\ntwo\n", on_vercel.text
    cloud.post(run, json={"code": "echo made-on-vercel > c.txt", "language": "shell"})

    back = cloud.post(f"/v2/sessions/{sid}/compute", json={"compute": {"provider": "local"}})
    assert back.status_code == 200, back.text
    on_local = cloud.post(run, json={"code": "cat notes/a.txt c.txt"})
    assert on_local.json()["stdout"] == "carried-over\nmade-on-vercel\n", on_local.text

    transcript = cloud.get(f"/v2/sessions/{sid}?full=1").json()["transcript"]
    swaps = [e["content"] for e in transcript if e["content"].get("reason") == "swap"]
    assert [s["provider"] for s in swaps] == ["vercel", "local"]
    assert swaps[0]["workspace"]["carried"] is True and swaps[0]["workspace"]["files"] == 2
    assert swaps[1]["workspace"]["files"] == 3
    # The whole history is one transcript: runs before, during and after the swaps.
    runs = [e for e in transcript if e["type"] == "exec"]
    assert len(runs) == 4
    assert cloud.delete(f"/v2/sessions/{sid}").status_code == 200


def test_short_form_fallback_walks_to_the_next_provider(
    cloud: httpx.Client, vercel_fake: str
) -> None:
    body = {"provider": "vercel", "credentials": {"vercel_token": SECRET}}
    assert cloud.post("/v2/account/providers", json=body).status_code == 201
    httpx.post(
        f"{vercel_fake}/_fake/faults", json={"path": "/v3/sandboxes", "status": 503, "count": 2}
    ).raise_for_status()
    pinned = cloud.post("/v2/sessions", json={"compute": {"provider": "vercel"}})
    assert pinned.status_code == 502, pinned.text  # no fallback asked: the failure is the answer

    created = cloud.post("/v2/sessions", json={"compute": {"provider": "vercel"}, "fallback": True})
    assert created.status_code == 201, created.text
    view = created.json()
    assert view["provider"] != "vercel"
    attempts = view["routing"]["attempts"]
    assert attempts[0]["provider"] == "vercel" and attempts[0]["ok"] is False
    assert attempts[0]["error"]["code"] == "provider_error"
    assert attempts[-1] == {**attempts[-1], "provider": view["provider"], "ok": True}
    assert "vercel" not in view["routing"]["fallback_order"]
    # The runtime was settled by the provider asked for (vercel: node) and stays node.
    assert view["runtime"] == "node"
    ran = cloud.post(f"/v2/sessions/{view['session_id']}/run", json={"code": "console.log('up')"})
    assert ran.json()["stdout"] == "up\n", ran.text
    assert cloud.delete(f"/v2/sessions/{view['session_id']}").status_code == 200
    # compute.fallback, the flag's old name (it used to mean "an offline relay" only), walks
    # the providers the same way.
    httpx.post(
        f"{vercel_fake}/_fake/faults", json={"path": "/v3/sandboxes", "status": 503, "count": 1}
    ).raise_for_status()
    old_name = cloud.post(
        "/v2/sessions", json={"compute": {"provider": "vercel", "fallback": True}}
    )
    assert old_name.status_code == 201, old_name.text
    assert old_name.json()["provider"] != "vercel"
    assert old_name.json()["routing"]["attempts"][0]["ok"] is False
    assert cloud.delete(f"/v2/sessions/{old_name.json()['session_id']}").status_code == 200


def test_canary_runs_on_vercel_with_the_accounts_credentials(
    cloud: httpx.Client, vercel_fake: str
) -> None:
    token = "canary-token-" + SECRET
    body = {"provider": "vercel", "credentials": {"vercel_token": token}}
    assert cloud.post("/v2/account/providers", json=body).status_code == 201
    canary = {"mode": "canary", "kind": "code_exec", "sample_size": 2, "providers": ["vercel"]}
    answer = cloud.post("/gateway/stress-tests", json=canary)
    assert answer.status_code == 200, answer.text
    report = answer.json()["results"]["vercel"]
    assert report["successes"] == 2 and report["p50_ms"] > 0, report
    assert token not in answer.text
    seen = [r for r in _received(vercel_fake) if r["token"] == token]
    creates = [r for r in seen if r["path"] == "/v3/sandboxes"]
    destroys = [r for r in seen if r["method"] == "DELETE"]
    assert len(creates) >= 1 and len(destroys) == len(creates)
