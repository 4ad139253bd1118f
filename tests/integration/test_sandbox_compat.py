"""The /sandbox API answers as the original Cerver API did (issue 17), over real HTTP.

Written from what the published SDK's own API suite (cerver 0.1.0 sdist, tests/test_api.py)
checks; where we differ on purpose, docs/sandbox-api.md says so.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from cerver.serve_app.cors import OpenCors

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@pytest.fixture
def sandbox(api: httpx.Client) -> Iterator[str]:
    sid = api.post("/sandbox").json()["sandbox_id"]
    yield sid
    api.delete(f"/sandbox/{sid}")


def run(api: httpx.Client, sandbox: str, code: str) -> dict:  # type: ignore[type-arg]
    r = api.post(f"/sandbox/{sandbox}/run", json={"code": code})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def test_index_names_the_api_and_lists_its_endpoints(anon: httpx.Client) -> None:
    r = anon.get("/")  # no token: the index is public
    assert r.status_code == 200
    index = r.json()
    assert index["name"] == "Cerver API"
    assert "POST /sandbox" in index["endpoints"]
    assert "POST /sandbox/{sandbox_id}/run" in index["endpoints"]
    assert "POST /v2/sessions" in index["endpoints"]
    assert not any(" /dashboard" in e for e in index["endpoints"])
    assert r.headers["access-control-allow-origin"] == "*"


def test_create_answers_200_ready(api: httpx.Client) -> None:
    r = api.post("/sandbox")
    assert r.status_code == 200, r.text
    made = r.json()
    assert made["status"] == "ready" and made["sandbox_id"].startswith("cmp_")
    assert api.get(f"/sandbox/{made['sandbox_id']}").json()["status"] == "ready"
    api.delete(f"/sandbox/{made['sandbox_id']}")


def test_output_loses_only_its_trailing_newlines(api: httpx.Client, sandbox: str) -> None:
    out = run(api, sandbox, "print('hi there')")
    assert (out["output"], out["error"], out["exit_code"]) == ("hi there", "", 0)
    assert out["stdout"] == "hi there\n"  # the contract's field keeps the bytes as written
    assert run(api, sandbox, "for n in (3, 2, 1):\n    print(n)\n")["output"] == "3\n2\n1"
    kept = run(api, sandbox, "print('  indented'); print(); print()")["output"]
    assert kept == "  indented"
    assert run(api, sandbox, "z = 0")["output"] == ""


def test_duration_is_whole_milliseconds(api: httpx.Client, sandbox: str) -> None:
    quick = run(api, sandbox, "pass")["duration"]
    slow = run(api, sandbox, "import time; time.sleep(0.3)")["duration"]
    assert type(quick) is int and quick >= 1  # rounded up: a run never takes 0 ms
    assert type(slow) is int and 300 <= slow < 5000


def test_errors_exit_1_with_the_python_error(api: httpx.Client, sandbox: str) -> None:
    name = run(api, sandbox, "print(never_defined)")
    assert name["exit_code"] == 1 and "NameError" in name["error"] and name["output"] == ""
    syntax = run(api, sandbox, "def broken(")
    assert syntax["exit_code"] == 1 and "SyntaxError" in syntax["error"]


def test_empty_code_is_400_before_any_lookup(api: httpx.Client, sandbox: str) -> None:
    for target in (sandbox, "cmp_doesnotexist"):
        r = api.post(f"/sandbox/{target}/run", json={"code": ""})
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["code"] == "bad_request" and error["details"] == {"field": "code"}
        assert "code is empty" in error["message"]
    r = api.post(f"/sandbox/{sandbox}/run", json={"code": "", "stream": True})
    assert r.status_code == 400


def test_state_stays_in_its_sandbox(api: httpx.Client, sandbox: str) -> None:
    other = api.post("/sandbox").json()["sandbox_id"]
    try:
        run(api, sandbox, "only_here = 'first'")
        assert run(api, sandbox, "print(only_here)")["output"] == "first"
        missing = run(api, other, "print(only_here)")
        assert missing["exit_code"] == 1 and "NameError" in missing["error"]
    finally:
        api.delete(f"/sandbox/{other}")


def test_api_answers_any_origin_without_credentials(api: httpx.Client, anon: httpx.Client) -> None:
    for r in (
        api.get("/v2/sessions", headers={"Origin": "https://app.example"}),
        api.get("/healthz"),
        anon.post("/sandbox"),  # a 401 is readable by the page too
        anon.get("/unknown/route"),
    ):
        assert r.headers["access-control-allow-origin"] == "*", r.request.url
        assert "access-control-allow-credentials" not in r.headers
    assert anon.post("/sandbox").status_code == 401
    assert anon.get("/unknown/route").status_code == 404


def test_preflights_are_204(anon: httpx.Client) -> None:
    bare = anon.options("/sandbox")  # the original's clients send it without an Origin
    assert bare.status_code == 204 and bare.content == b""
    assert "POST" in bare.headers["access-control-allow-methods"]
    browser = anon.options(
        "/sandbox/cmp_x/run",
        headers={
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert browser.status_code == 204
    assert browser.headers["access-control-allow-origin"] == "*"
    allowed = browser.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed and "content-type" in allowed
    assert "access-control-allow-credentials" not in browser.headers


def test_dashboard_is_never_opened_to_other_origins(anon: httpx.Client) -> None:
    origin = {"Origin": "https://evil.example"}
    preflight = {**origin, "Access-Control-Request-Method": "POST"}
    for r in (
        anon.get("/dashboard", headers=origin),
        anon.get("/dashboard/sessions", headers=origin),
        anon.options("/dashboard/login", headers=preflight),
    ):
        assert r.status_code != 204, r.request.url
        assert not any(h.startswith("access-control-") for h in r.headers), r.request.url


def test_closed_prefix_matches_whole_path_segments() -> None:
    cors = OpenCors(app=None)
    assert cors.is_closed("/dashboard") and cors.is_closed("/dashboard/x/y")
    assert not cors.is_closed("/dashboards") and not cors.is_closed("/sandbox")
