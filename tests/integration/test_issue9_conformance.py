"""What the docs promise and the code did not do (issue 9, bugs 3, 4, 6, 7), over real HTTP:
bad nested long-form fields and bad env names are 422s naming the field (not 500s); the id a
session shows as ``sandbox_id`` works on ``/sandbox/{id}``; ``Accept: text/event-stream``
chooses streaming on both run routes."""

from __future__ import annotations

import json

import httpx
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

SSE = {"Accept": "text/event-stream"}


def _sessions(api: httpx.Client) -> int:
    return len(api.get("/v2/sessions", params={"limit": 200}).json()["sessions"])


def _field(r: httpx.Response) -> str:
    assert r.status_code == 422, r.text
    return str(r.json()["error"]["details"][0]["field"])


def test_long_form_create_with_a_bad_nested_field_is_422_naming_it(api: httpx.Client) -> None:
    before = _sessions(api)
    bad = [
        ({"task": "t", "policy": {"mode": "cheap"}}, "policy.mode"),
        ({"task": "t", "requirements": {"persistence_level": "forever"}}, "requirements."),
        ({"task": "t", "policy": {"mode": "balanced", "colour": "red"}}, "policy.colour"),
        ({"task": "t", "policy": {}, "repo": {"name": 3}}, "repo.name"),
    ]
    for body, field in bad:
        r = api.post("/v2/sessions", json=body)
        assert _field(r).startswith(field), (body, r.text)
        assert r.json()["error"]["code"] == "validation_error"
    # The same bodies on /gateway/recommend were already 422s.
    assert api.post("/gateway/recommend", json=bad[0][0]).status_code == 422
    assert _sessions(api) == before  # nothing half-made


def test_sandbox_create_with_an_invalid_env_name_is_422(api: httpx.Client) -> None:
    before = api.get("/v2/computes").json()["computes"]
    r = api.post("/sandbox", json={"env": {"1-BAD": "x"}})
    assert _field(r).startswith("env")
    assert "1-BAD" in r.json()["error"]["message"]
    r = api.post("/sandbox/cmp_nope/run", json={"code": "1", "env": {"A B": "x"}})
    assert _field(r).startswith("env")
    assert api.get("/v2/computes").json()["computes"] == before


def test_the_sandbox_id_a_session_shows_names_its_compute_on_sandbox_routes(
    api: httpx.Client, other_api: httpx.Client
) -> None:
    s = api.post("/v2/sessions", json={"compute": {"provider": "local"}}).json()
    sbx, cmp = s["sandbox_id"], s["compute_id"]
    assert sbx.startswith("sbx_") and cmp.startswith("cmp_")
    try:
        info = api.get(f"/sandbox/{sbx}")
        assert info.status_code == 200, info.text
        assert info.json()["compute_id"] == cmp and info.json()["session_id"] == s["session_id"]
        # It is the session's: operations point there, and nothing of it is taken away.
        r = api.post(f"/sandbox/{sbx}/run", json={"code": "print(1)"})
        assert r.status_code == 409 and s["session_id"] in r.json()["error"]["message"]
        r = api.delete(f"/sandbox/{sbx}")
        assert r.status_code == 409
        assert other_api.get(f"/sandbox/{sbx}").status_code == 404
        run = api.post(f"/v2/sessions/{s['session_id']}/run", json={"code": "echo still"})
        assert run.status_code == 200 and run.json()["stdout"] == "still\n"
    finally:
        api.delete(f"/v2/sessions/{s['session_id']}")


def test_a_sandbox_answers_to_its_provider_sandbox_id_too(api: httpx.Client) -> None:
    cmp = api.post("/sandbox").json()["sandbox_id"]
    try:
        computes = {c["compute_id"]: c for c in api.get("/v2/computes").json()["computes"]}
        sbx = computes[cmp]["sandbox_id"]
        assert sbx.startswith("sbx_")
        api.post(f"/sandbox/{cmp}/run", json={"code": "x = 41"})
        out = api.post(f"/sandbox/{sbx}/run", json={"code": "print(x + 1)"}).json()
        assert out["output"] == "42"  # the same sandbox, the same interpreter
        assert api.get(f"/sandbox/{sbx}").json()["compute_id"] == cmp
    finally:
        assert api.delete(f"/sandbox/{cmp}").status_code == 200
    assert api.get(f"/sandbox/{sbx}").status_code == 404


def _events(r: httpx.Response) -> list[dict]:  # type: ignore[type-arg]
    assert r.status_code == 200, r.read()
    assert r.headers["content-type"].startswith("text/event-stream")
    return [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]


def test_accept_event_stream_chooses_streaming_on_both_run_routes(api: httpx.Client) -> None:
    sid = api.post("/v2/sessions", json={"compute": {"provider": "local"}}).json()["session_id"]
    cmp = api.post("/sandbox").json()["sandbox_id"]
    try:
        body = {"code": "echo streamed"}
        with api.stream("POST", f"/v2/sessions/{sid}/run", json=body, headers=SSE) as r:
            events = _events(r)
            assert r.headers["X-Cerver-Provider"] == "local"
        assert events[-1]["type"] == "exit" and events[-1]["result"]["stdout"] == "streamed\n"
        with api.stream("POST", f"/sandbox/{cmp}/run", json={"code": "print(7)"}, headers=SSE) as r:
            events = _events(r)
        assert "".join(e["data"] for e in events if e["type"] == "stdout") == "7\n"
        assert events[-1]["type"] == "exit"
        # Without the header and without "stream": JSON, as before.
        r = api.post(f"/v2/sessions/{sid}/run", json=body)
        assert r.headers["content-type"].startswith("application/json")
        assert r.json()["stdout"] == "streamed\n"
        r = api.post(f"/sandbox/{cmp}/run", json={"code": "print(8)"})
        assert r.json()["output"] == "8"
    finally:
        api.delete(f"/v2/sessions/{sid}")
        api.delete(f"/sandbox/{cmp}")
