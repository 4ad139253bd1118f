"""The dashboard over real HTTP on the shared server: sign-in and its cookie, CSRF, account
scoping, token create/revoke against the API, the live transcript fragment, and the pages."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.dashboard.conftest import csrf_of, sign_in

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_pages_without_a_session_redirect_to_sign_in(anon: httpx.Client) -> None:
    for path in ("/dashboard/sessions", "/dashboard/tokens", "/dashboard/sessions/sess_x"):
        r = anon.get(path)
        assert r.status_code == 303, path
        assert r.headers["location"] == "/dashboard/login"
    form = anon.get("/dashboard/login")
    assert form.status_code == 200
    assert '<label for="token">API token</label>' in form.text
    assert ">Sign in</button>" in form.text


def test_wrong_token_shows_the_form_again_with_an_alert(anon: httpx.Client) -> None:
    r = sign_in(anon, "ck_not-a-real-token")
    assert r.status_code == 401
    assert 'role="alert"' in r.text and "API token" in r.text
    assert "set-cookie" not in r.headers


def test_sign_in_sets_a_strict_httponly_cookie_that_is_not_the_token(
    anon: httpx.Client, dash_token: str
) -> None:
    r = sign_in(anon, dash_token)
    assert r.status_code == 303 and r.headers["location"] == "/dashboard/sessions"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("cerver_dashboard=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/dashboard" in cookie
    assert "Secure" not in cookie  # plain HTTP, and no trusted proxy says otherwise
    assert dash_token not in cookie
    # A forwarded-proto header from an untrusted peer does not make it Secure either.
    forwarded = anon.post(
        "/dashboard/login", data={"token": dash_token}, headers={"X-Forwarded-Proto": "https"}
    )
    assert "Secure" not in forwarded.headers["set-cookie"]


def test_cross_site_sign_in_is_refused(anon: httpx.Client, dash_token: str) -> None:
    r = anon.post(
        "/dashboard/login", data={"token": dash_token}, headers={"Origin": "https://evil.test"}
    )
    assert r.status_code == 403 and "set-cookie" not in r.headers


def test_sign_out_ends_the_session_on_the_server(server: str, dash_token: str) -> None:
    with httpx.Client(base_url=server, timeout=30) as client:
        sign_in(client, dash_token)
        old = client.cookies.get("cerver_dashboard")
        page = client.get("/dashboard/sessions")
        assert page.status_code == 200
        out = client.post("/dashboard/logout", data={"csrf_token": csrf_of(page.text)})
        assert out.status_code == 303 and out.headers["location"] == "/dashboard/login"
    with httpx.Client(base_url=server, timeout=30, cookies={"cerver_dashboard": old}) as replay:
        assert replay.get("/dashboard/sessions").status_code == 303


def test_changes_without_the_csrf_token_are_refused(browser_client: httpx.Client) -> None:
    before = browser_client.get("/dashboard/tokens").text.count("<tr")
    for data in ({"name": "no-csrf"}, {"name": "bad-csrf", "csrf_token": "forged"}):
        r = browser_client.post("/dashboard/tokens", data=data)
        assert r.status_code == 403
    assert browser_client.post("/dashboard/logout").status_code == 403
    assert browser_client.get("/dashboard/tokens").text.count("<tr") == before


def test_token_created_on_the_dashboard_works_until_revoked_there(
    server: str, browser_client: httpx.Client
) -> None:
    csrf = csrf_of(browser_client.get("/dashboard/tokens").text)
    made = browser_client.post("/dashboard/tokens", data={"name": "ci-agent", "csrf_token": csrf})
    assert made.status_code == 200 and made.headers["cache-control"] == "no-store"
    token = made.text.split('id="new-token" type="text" readonly value="', 1)[1].split('"', 1)[0]
    assert token.startswith("ck_")
    api = httpx.Client(base_url=server, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert api.get("/v2/sessions").status_code == 200
    listing = browser_client.get("/dashboard/tokens").text
    assert "ci-agent" in listing and token[:10] in listing and token not in listing
    token_id = listing.split("ci-agent", 1)[1].split("/dashboard/tokens/", 1)[1].split("/", 1)[0]
    confirm = browser_client.get(f"/dashboard/tokens/{token_id}/revoke")
    assert confirm.status_code == 200 and "Yes, revoke it" in confirm.text
    done = browser_client.post(
        f"/dashboard/tokens/{token_id}/revoke", data={"csrf_token": csrf_of(confirm.text)}
    )
    assert done.status_code == 303
    deadline = time.time() + 10  # each replica remembers a valid token for 2 s
    while api.get("/v2/sessions").status_code != 401:
        assert time.time() < deadline, "revoked token still accepted"
        time.sleep(0.25)
    assert "revoked" in browser_client.get("/dashboard/tokens").text


def test_another_accounts_session_is_not_found(
    browser_client: httpx.Client, other_api: httpx.Client
) -> None:
    theirs = other_api.post("/v2/sessions", json={"compute": None, "session_name": "private"})
    assert theirs.status_code == 201
    sid = theirs.json()["session_id"]
    for path in (f"/dashboard/sessions/{sid}", f"/dashboard/sessions/{sid}/tail?since=0"):
        r = browser_client.get(path)
        assert r.status_code == 404 and "private" not in r.text
    assert sid not in browser_client.get("/dashboard/sessions").text


def test_sessions_page_search_filter_and_server_timing(
    browser_client: httpx.Client, dash_api: httpx.Client
) -> None:
    tag = f"srch{time.time_ns()}"
    for name in (f"{tag}-alpha", f"{tag}-beta"):
        assert dash_api.post(
            "/v2/sessions", json={"compute": None, "session_name": name}
        ).is_success
    page = browser_client.get("/dashboard/sessions", params={"q": f"{tag}-al"})
    assert page.status_code == 200
    assert f"{tag}-alpha" in page.text and f"{tag}-beta" not in page.text
    assert page.headers["server-timing"].startswith("app;dur=")
    none = browser_client.get("/dashboard/sessions", params={"q": tag, "status": "closed"})
    assert f"{tag}-alpha" not in none.text


def test_session_page_tails_new_runs(browser_client: httpx.Client, dash_api: httpx.Client) -> None:
    made = dash_api.post(
        "/v2/sessions", json={"compute": {"provider": "local"}, "session_name": "tailing"}
    )
    assert made.status_code == 201, made.text
    sid = made.json()["session_id"]
    try:
        page = browser_client.get(f"/dashboard/sessions/{sid}")
        assert page.status_code == 200 and "total_exec_count" in page.text
        since = int(page.text.split(f"/dashboard/sessions/{sid}/tail?since=", 1)[1].split('"')[0])
        ran = dash_api.post(f"/v2/sessions/{sid}/run", json={"code": "echo tail-marker-42"})
        assert ran.status_code == 200, ran.text
        fragment = browser_client.get(f"/dashboard/sessions/{sid}/tail", params={"since": since})
        assert fragment.status_code == 200
        assert "tail-marker-42" in fragment.text and 'hx-trigger="every 2s"' in fragment.text
        # The same data the API returns.
        seq = dash_api.get(f"/v2/sessions/{sid}", params={"tail": 1}).json()["next_since"]
        assert f'data-seq="{seq}"' in fragment.text
    finally:
        dash_api.delete(f"/v2/sessions/{sid}")


def test_compare_runs_a_simulated_stress_test(browser_client: httpx.Client) -> None:
    page = browser_client.get("/dashboard/stress")
    csrf = csrf_of(page.text)
    r = browser_client.post(
        "/dashboard/stress",
        data={
            "csrf_token": csrf,
            "task": "Compare preview launch backends",
            "workload": "preview",
            "runtime": "node",
            "sample_size": "50",
            "providers": ["vercel", "e2b"],
            "mode": "balanced",
        },
    )
    assert r.status_code == 200, r.text[-500:]
    assert 'id="report"' in r.text and "Recommended:" in r.text
    assert 'data-chart="stress"' in r.text
    bad = browser_client.post("/dashboard/stress", data={"csrf_token": csrf, "sample_size": "0"})
    assert bad.status_code == 422 and 'role="alert"' in bad.text


def test_a_relay_login_is_approved_on_the_computes_page(
    anon: httpx.Client, browser_client: httpx.Client
) -> None:
    started = anon.post(
        "/v2/relay/device",
        json={
            "host": {
                "hostname": "dash-laptop",
                "os": "linux",
                "cpu_count": 2,
                "memory_mb": 1024,
                "max_concurrent_runs": 2,
                "network_allowed": False,
                "isolation": "bwrap",
                "version": "test",
            }
        },
    )
    assert started.status_code == 200, started.text
    grant = started.json()
    assert grant["verification_uri"].endswith("/dashboard/computes")
    path = "/dashboard/computes?" + grant["verification_uri_complete"].split("?", 1)[1]
    link = browser_client.get(path)
    assert link.status_code == 200 and grant["user_code"] in link.text  # prefilled
    csrf = csrf_of(link.text)
    wrong = browser_client.post(
        "/dashboard/computes/approve", data={"csrf_token": csrf, "user_code": "ZZZZ-ZZZZ"}
    )
    assert wrong.status_code == 400 and 'role="alert"' in wrong.text
    ok = browser_client.post(
        "/dashboard/computes/approve", data={"csrf_token": csrf, "user_code": grant["user_code"]}
    )
    assert ok.status_code == 200 and "Approved" in ok.text
    token = anon.post(
        "/v2/relay/token",
        json={"device_code": grant["device_code"]},
    )
    assert token.status_code == 200 and token.json()["access_token"].startswith("crl_")
    again = browser_client.post(
        "/dashboard/computes/approve", data={"csrf_token": csrf, "user_code": grant["user_code"]}
    )
    assert again.status_code == 400  # a used code cannot be approved twice


def test_a_relay_login_is_denied_on_the_computes_page(
    anon: httpx.Client, browser_client: httpx.Client
) -> None:
    host = {
        "hostname": "unknown-box",
        "os": "linux",
        "cpu_count": 1,
        "memory_mb": 512,
        "max_concurrent_runs": 1,
        "network_allowed": False,
        "isolation": "bwrap",
        "version": "test",
    }
    grant = anon.post("/v2/relay/device", json={"host": host}).json()
    csrf = csrf_of(browser_client.get("/dashboard/computes").text)
    denied = browser_client.post(
        "/dashboard/computes/approve",
        data={"csrf_token": csrf, "user_code": grant["user_code"], "decision": "deny"},
    )
    assert denied.status_code == 200 and "Denied" in denied.text
    polled = anon.post("/v2/relay/token", json={"device_code": grant["device_code"]})
    assert polled.status_code == 400 and polled.json()["error"]["code"] == "access_denied"
    assert "unknown-box" not in browser_client.get("/dashboard/computes").text


def test_providers_are_registered_rotated_and_deleted_on_the_dashboard(
    browser_client: httpx.Client, dash_api: httpx.Client
) -> None:
    from tests.conftest import E2B_REVOKED_KEY_REF, E2B_TEST_KEY_REF

    page = browser_client.get("/dashboard/providers")
    csrf = csrf_of(page.text)
    assert "e2b_api_key (required)" in page.text

    def save(ref: str) -> httpx.Response:
        return browser_client.post(
            "/dashboard/providers",
            data={
                "csrf_token": csrf,
                "provider": "e2b",
                "f_e2b_api_key": ref,
                "ref_e2b_api_key": "1",
            },
        )

    refused = save(E2B_REVOKED_KEY_REF)  # E2B (the fake) refuses this key: nothing stored
    assert refused.status_code == 422 and 'role="alert"' in refused.text
    assert dash_api.get("/v2/account/providers").json()["providers"] == []
    saved = save(E2B_TEST_KEY_REF)
    assert saved.status_code == 200 and "Saved e2b" in saved.text
    assert "e2b_api_key" in saved.text  # field names are shown, never a value
    import os

    assert os.environ[E2B_TEST_KEY_REF] not in saved.text
    listed = dash_api.get("/v2/account/providers").json()["providers"]
    assert [p["provider"] for p in listed] == ["e2b"]
    rotated = save(E2B_TEST_KEY_REF)  # posting again rotates
    assert rotated.status_code == 200
    gone = browser_client.post("/dashboard/providers/e2b/delete", data={"csrf_token": csrf})
    assert gone.status_code == 200 and "Deleted e2b" in gone.text
    assert dash_api.get("/v2/account/providers").json()["providers"] == []
    # An openai-compatible endpoint with the models it serves, as the API takes them.
    endpoint = {
        "csrf_token": csrf,
        "provider": "openai-compatible",
        "f_base_url": "http://127.0.0.1:9/v1",
        "models": "my-llama, my-qwen",
    }
    made = browser_client.post("/dashboard/providers", data=endpoint)
    assert made.status_code == 200 and "models: my-llama, my-qwen" in made.text
    listed = dash_api.get("/v2/account/providers").json()["providers"]
    assert [p["models"] for p in listed] == [["my-llama", "my-qwen"]]
    shadow = browser_client.post("/dashboard/providers", data={**endpoint, "models": "gpt-5"})
    assert shadow.status_code == 422 and "models[0]" in shadow.text
    deleted = browser_client.post(
        "/dashboard/providers/openai-compatible/delete", data={"csrf_token": csrf}
    )
    assert deleted.status_code == 200
