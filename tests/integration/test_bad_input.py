"""Bad input gets a clear error with the right status, and loses nothing."""

from __future__ import annotations

import httpx
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def count_sessions(api: httpx.Client) -> int:
    return len(api.get("/v2/sessions", params={"limit": 200}).json()["sessions"])


@pytest.fixture
def session(api: httpx.Client):  # type: ignore[no-untyped-def]
    r = api.post("/v2/sessions", json={"compute": {"provider": "local"}})
    assert r.status_code == 201, r.text
    sid = r.json()["session_id"]
    yield sid
    api.delete(f"/v2/sessions/{sid}")


def test_missing_and_bad_tokens(anon: httpx.Client) -> None:
    r = anon.get("/v2/sessions")
    assert r.status_code == 401
    assert "Authorization: Bearer" in r.json()["error"]["message"]
    r = anon.get("/v2/sessions", headers={"Authorization": "Bearer ck_nope"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    r = anon.post("/v2/sessions", json={"compute": None}, headers={"Authorization": "Basic x"})
    assert r.status_code == 401


def test_malformed_json_and_wrong_types(api: httpx.Client) -> None:
    before = count_sessions(api)
    r = api.post(
        "/v2/sessions", content=b'{"compute": ', headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 400 and "malformed JSON" in r.json()["error"]["message"]
    r = api.post("/v2/sessions", json={"compute": {"provider": 42}})
    assert r.status_code == 422
    assert r.json()["error"]["details"][0]["field"].startswith("compute.provider")
    r = api.post("/v2/sessions", json={"compute": None, "sesion_name": "typo"})
    assert r.status_code == 422 and "sesion_name" in r.json()["error"]["message"]
    r = api.post("/v2/sessions", json={"compute": {"provider": "local", "compute_id": "cmp_x"}})
    assert r.status_code == 422 and "exactly one" in r.json()["error"]["message"]
    r = api.post("/v2/sessions", json={"compute": None, "harness": "skynet"})
    assert r.status_code == 422 and "openai" in r.json()["error"]["message"]
    assert count_sessions(api) == before


def test_unknown_and_unusable_providers(api: httpx.Client) -> None:
    before = count_sessions(api)
    r = api.post("/v2/sessions", json={"compute": {"provider": "nimbus"}})
    assert r.status_code == 400
    assert "local" in r.json()["error"]["message"] and "e2b" in r.json()["error"]["message"]
    r = api.post("/v2/sessions", json={"compute": {"provider": "vercel"}})
    assert r.status_code == 409
    err = r.json()["error"]
    assert err["code"] == "compute_unavailable" and "local" in err["details"]["usable_providers"]
    assert err["details"]["recommendation"]["recommended_provider"] == "local"
    assert count_sessions(api) == before


def test_unknown_session_and_endpoint(api: httpx.Client) -> None:
    r = api.post("/v2/sessions/sess_doesnotexist/run", json={"code": "true"})
    assert r.status_code == 404 and "GET /v2/sessions" in r.json()["error"]["message"]
    r = api.get("/v2/nothing-here")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_oversized_body(api: httpx.Client, session: str) -> None:
    big = "echo " + "x" * (300 * 1024)
    r = api.post(f"/v2/sessions/{session}/run", json={"code": big})
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    assert (
        api.post(f"/v2/sessions/{session}/run", json={"code": "echo ok"}).json()["stdout"] == "ok\n"
    )


def test_code_that_never_ends(api: httpx.Client, session: str) -> None:
    r = api.post(
        f"/v2/sessions/{session}/run", json={"code": "sleep 1000 & sleep 1000", "timeout": 1}
    )
    assert r.status_code == 200
    out = r.json()
    assert out["timed_out"] is True and "timed out" in (out["stderr"] + (out["error"] or ""))
    again = api.post(f"/v2/sessions/{session}/run", json={"code": "echo alive"}).json()
    assert again["stdout"] == "alive\n"
    r = api.post(f"/v2/sessions/{session}/run", json={"code": "true", "timeout": 10_000})
    assert r.status_code == 422 and "maximum" in r.json()["error"]["message"]
    r = api.post(f"/v2/sessions/{session}/run", json={"code": "true", "timeout": -1})
    assert r.status_code == 422


def test_code_that_prints_gigabytes(api: httpx.Client, session: str) -> None:
    r = api.post(f"/v2/sessions/{session}/run", json={"code": "yes cerver", "timeout": 3})
    assert r.status_code == 200
    out = r.json()
    assert out["truncated"] is True and "truncated" in out["stdout"][-200:]
    assert len(out["stdout"]) < 80 * 1024


def test_code_that_forks_without_end(api: httpx.Client, session: str) -> None:
    r = api.post(
        f"/v2/sessions/{session}/run",
        json={"code": "bomb() { bomb | bomb & }; bomb", "timeout": 3},
    )
    assert r.status_code == 200
    again = api.post(f"/v2/sessions/{session}/run", json={"code": "echo survived"}).json()
    assert again["stdout"] == "survived\n"


def test_run_on_closed_session(api: httpx.Client) -> None:
    sid = api.post("/v2/sessions", json={"compute": {"provider": "local"}}).json()["session_id"]
    api.post(f"/v2/sessions/{sid}/run", json={"code": "echo once"})
    assert api.delete(f"/v2/sessions/{sid}").status_code == 200
    before = api.get(f"/v2/sessions/{sid}", params={"full": 1}).json()["transcript"]
    r = api.post(f"/v2/sessions/{sid}/run", json={"code": "echo twice"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "session_closed"
    r = api.post(f"/v2/sessions/{sid}/compute", json={"compute": {"provider": "local"}})
    assert r.status_code == 409
    after = api.get(f"/v2/sessions/{sid}", params={"full": 1}).json()["transcript"]
    assert after == before
    assert api.delete(f"/v2/sessions/{sid}").status_code == 200  # idempotent


def test_revoked_token_stops_working(server: str, store) -> None:  # type: ignore[no-untyped-def]
    import time

    from cerver.serve_app.deps import AUTH_CACHE_S

    account = store.accounts.get_or_create("short-lived")
    token = store.accounts.issue_token(account.id)
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{server}/v2/sessions", headers=headers).status_code == 200
    assert store.accounts.revoke(token)
    time.sleep(AUTH_CACHE_S + 0.2)
    r = httpx.get(f"{server}/v2/sessions", headers=headers)
    assert r.status_code == 401 and "revoked" in r.json()["error"]["message"]
