"""The session API end to end: real Ray, real Serve, real HTTP on loopback, real sandboxes."""

from __future__ import annotations

import json
import time

import httpx
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SEED_METRICS = {
    "provision_time_ms",
    "time_to_first_exec_ms",
    "last_exec_latency_ms",
    "average_exec_latency_ms",
    "average_stream_open_latency_ms",
    "total_exec_count",
    "total_stream_count",
    "interaction_count",
    "session_length_ms",
    "cost_estimate_usd",
    "uptime_percent",
    "predicted_startup_ms",
    "engagement_score",
    "engagement_label",
}


def create(api: httpx.Client, **body: object) -> dict:
    payload = {"compute": {"provider": "local"}, **body}
    r = api.post("/v2/sessions", json=payload)
    assert r.status_code == 201, r.text
    return r.json()


def test_copy_this_first_flow(api: httpx.Client) -> None:
    r = api.post(
        "/v2/sessions",
        json={
            "session_name": "hello-cerver",
            "compute": {"provider": "local"},
            "harness": "openai",
        },
    )
    assert r.status_code == 201, r.text
    s = r.json()
    for field in (
        "session_id",
        "status",
        "provider",
        "compute_id",
        "sandbox_id",
        "metrics",
        "routing",
    ):
        assert field in s
    assert s["status"] == "ready" and s["provider"] == "local"
    assert s["session_id"].startswith("sess_") and s["compute_id"].startswith("cmp_")
    assert set(s["metrics"]) >= SEED_METRICS
    assert s["metrics"]["provision_time_ms"] > 0
    assert s["routing"]["recommended_provider"] == "local"
    sid = s["session_id"]

    r = api.post(f"/v2/sessions/{sid}/run", json={"code": "echo hello from cerver"})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["stdout"] == "hello from cerver\n"
    assert out["exit_code"] == 0 and out["timed_out"] is False and out["truncated"] is False
    assert out["duration_ms"] > 0 and out["stderr"] == ""
    assert r.headers["X-Cerver-Session-Id"] == sid
    assert r.headers["X-Cerver-Provider"] == "local"

    r = api.get(f"/v2/sessions/{sid}/metrics")
    assert r.status_code == 200
    m = r.json()["metrics"]
    assert set(m) >= SEED_METRICS
    assert m["total_exec_count"] == 1 and m["interaction_count"] == 1
    assert m["last_exec_latency_ms"] > 0 and m["time_to_first_exec_ms"] > 0
    assert m["cost_estimate_usd"] > 0 and m["session_length_ms"] > 0

    r = api.delete(f"/v2/sessions/{sid}")
    assert r.status_code == 200
    assert r.json()["status"] == "closed"
    r = api.get(f"/v2/sessions/{sid}", params={"full": 1})
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "closed"
    types = [e["type"] for e in body["transcript"]]
    assert types[0] == "system" and "exec" in types and types[-1] == "system"
    assert [e["seq"] for e in body["transcript"]] == list(range(1, len(types) + 1))
    # The compute was released.
    computes = api.get("/v2/computes", params={"include_released": True}).json()["computes"]
    mine = [c for c in computes if c["compute_id"] == s["compute_id"]]
    assert mine and mine[0]["status"] == "released"


def test_metrics_are_computed_not_constant(api: httpx.Client) -> None:
    sid = create(api)["session_id"]
    first = api.get(f"/v2/sessions/{sid}/metrics").json()["metrics"]
    for i in range(3):
        assert api.post(f"/v2/sessions/{sid}/run", json={"code": f"echo {i}"}).status_code == 200
    time.sleep(0.05)
    later = api.get(f"/v2/sessions/{sid}/metrics").json()["metrics"]
    assert first["total_exec_count"] == 0 and later["total_exec_count"] == 3
    assert later["session_length_ms"] > first["session_length_ms"]
    assert later["cost_estimate_usd"] > first["cost_estimate_usd"]
    assert later["engagement_score"] > first["engagement_score"]
    assert later["average_exec_latency_ms"] is not None
    api.delete(f"/v2/sessions/{sid}")


def test_python_keeps_state_between_runs(api: httpx.Client) -> None:
    sid = create(api, runtime="python")["session_id"]
    assert api.post(f"/v2/sessions/{sid}/run", json={"code": "x = 41"}).json()["exit_code"] == 0
    out = api.post(f"/v2/sessions/{sid}/run", json={"code": "print(x + 1)"}).json()
    assert out["stdout"] == "42\n"
    shell = api.post(f"/v2/sessions/{sid}/run", json={"code": "echo $0", "language": "shell"})
    assert shell.json()["exit_code"] == 0
    api.delete(f"/v2/sessions/{sid}")


def test_stream_is_sse_with_cerver_headers(api: httpx.Client) -> None:
    sid = create(api)["session_id"]
    body = {"code": "echo one; echo two >&2; echo three", "stream": True}
    with api.stream("POST", f"/v2/sessions/{sid}/run", json=body) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["X-Cerver-Session-Id"] == sid
        assert r.headers["X-Cerver-Provider"] == "local"
        assert float(r.headers["X-Cerver-Stream-Latency-Ms"]) > 0
        events = []
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    stdout = "".join(e["data"] for e in events if e["type"] == "stdout")
    stderr = "".join(e["data"] for e in events if e["type"] == "stderr")
    assert stdout == "one\nthree\n" and stderr == "two\n"
    assert events[-1]["type"] == "exit" and events[-1]["result"]["exit_code"] == 0
    m = api.get(f"/v2/sessions/{sid}/metrics").json()["metrics"]
    assert m["total_stream_count"] == 1 and m["average_stream_open_latency_ms"] > 0
    api.delete(f"/v2/sessions/{sid}")


def test_swap_compute_keeps_transcript(api: httpx.Client) -> None:
    s = create(api)
    sid = s["session_id"]
    api.post(f"/v2/sessions/{sid}/run", json={"code": "echo before"})
    r = api.post(f"/v2/sessions/{sid}/compute", json={"compute": {"provider": "local"}})
    assert r.status_code == 200, r.text
    swapped = r.json()
    assert swapped["session_id"] == sid and swapped["compute_id"] != s["compute_id"]
    out = api.post(f"/v2/sessions/{sid}/run", json={"code": "echo after"}).json()
    assert out["stdout"] == "after\n" and out["compute_id"] == swapped["compute_id"]
    entries = api.get(f"/v2/sessions/{sid}", params={"full": 1}).json()["transcript"]
    codes = [e["content"].get("code") for e in entries if e["type"] == "exec"]
    assert codes == ["echo before", "echo after"]
    swaps = [e for e in entries if e["type"] == "compute" and e["content"]["reason"] == "swap"]
    assert swaps and swaps[0]["content"]["previous_compute_id"] == s["compute_id"]
    # Swap to no compute: transcript-only from now on.
    r = api.post(f"/v2/sessions/{sid}/compute", json={"compute": None})
    assert r.status_code == 200 and r.json()["provider"] is None
    r = api.post(f"/v2/sessions/{sid}/run", json={"code": "echo x"})
    assert r.status_code == 409
    api.delete(f"/v2/sessions/{sid}")


def test_transcript_only_session_answers_409_with_recommendation(api: httpx.Client) -> None:
    r = api.post("/v2/sessions", json={"session_name": "notes", "compute": None})
    assert r.status_code == 201, r.text
    s = r.json()
    assert s["provider"] is None and s["compute_id"] is None
    r = api.post(f"/v2/sessions/{s['session_id']}/run", json={"code": "echo hi"})
    assert r.status_code == 409
    err = r.json()["error"]
    assert err["code"] == "compute_unavailable"
    assert "local" in err["details"]["usable_providers"]
    assert err["details"]["recommendation"]["recommended_provider"] == "local"


def test_list_find_and_peek(api: httpx.Client) -> None:
    name = f"lister-{time.time_ns()}"
    ids = [
        api.post("/v2/sessions", json={"session_name": name, "compute": None}).json()["session_id"]
        for _ in range(3)
    ]
    page1 = api.get("/v2/sessions", params={"limit": 2, "name": name}).json()
    assert [s["session_id"] for s in page1["sessions"]] == ids[::-1][:2]
    assert page1["next_cursor"]
    page2 = api.get(
        "/v2/sessions", params={"limit": 2, "name": name, "cursor": page1["next_cursor"]}
    ).json()
    assert [s["session_id"] for s in page2["sessions"]] == [ids[0]]
    assert page2["next_cursor"] is None
    peek = api.get(f"/v2/sessions/{ids[0]}", params={"tail": 1}).json()
    assert len(peek["transcript"]) == 1 and peek["transcript_length"] == 1
    since = api.get(f"/v2/sessions/{ids[0]}", params={"since": 1}).json()
    assert since["transcript"] == []


def test_accounts_are_isolated(api: httpx.Client, other_api: httpx.Client) -> None:
    sid = create(api)["session_id"]
    for method, path, body in [
        ("GET", f"/v2/sessions/{sid}", None),
        ("GET", f"/v2/sessions/{sid}/metrics", None),
        ("POST", f"/v2/sessions/{sid}/run", {"code": "echo pwned"}),
        ("POST", f"/v2/sessions/{sid}/compute", {"compute": None}),
        ("DELETE", f"/v2/sessions/{sid}", None),
    ]:
        r = other_api.request(method, path, json=body)
        assert r.status_code == 404, (method, path, r.text)
        assert r.json()["error"]["code"] == "not_found"
    listed = other_api.get("/v2/sessions", params={"limit": 200}).json()["sessions"]
    assert sid not in {s["session_id"] for s in listed}
    assert all(c["session_id"] != sid for c in other_api.get("/v2/computes").json()["computes"])
    # Still intact for its owner.
    out = api.post(f"/v2/sessions/{sid}/run", json={"code": "echo mine"}).json()
    assert out["stdout"] == "mine\n"
    entries = api.get(f"/v2/sessions/{sid}", params={"full": 1}).json()["transcript"]
    assert "echo pwned" not in json.dumps(entries)
    api.delete(f"/v2/sessions/{sid}")


def test_openapi_is_published(anon: httpx.Client) -> None:
    spec = anon.get("/openapi.json").json()
    for path in ("/v2/sessions", "/v2/sessions/{session_id}/run", "/v2/computes"):
        assert path in spec["paths"]
    assert anon.get("/docs").status_code == 200
