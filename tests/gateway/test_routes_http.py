"""The gateway routes over real HTTP on the shared Ray Serve instance."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.gateway.test_recommend import SEED_LONG_FORM, SEED_SHORT

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_recommend_without_a_token(anon: httpx.Client) -> None:
    r = anon.post("/gateway/recommend", json=SEED_LONG_FORM)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["recommended_provider"] in {"vercel", "e2b"}
    assert body["executable"] is None
    assert {"scores", "excluded", "confidence", "confidence_value", "fallback_order"} <= set(body)


def test_recommend_with_a_token_says_what_is_executable(api: httpx.Client) -> None:
    r = api.post("/gateway/recommend", json=SEED_SHORT)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["recommended_provider"] == "local"
    assert body["executable"] == ["local", "ray"]  # both run on this deployment
    assert body["excluded"]["e2b"] == "not executable for this account"


def test_recommend_errors_use_the_one_shape(anon: httpx.Client) -> None:
    r = anon.post("/gateway/recommend", json={**SEED_SHORT, "colour": "blue"})
    assert r.status_code == 422 and "colour" in r.json()["error"]["message"]
    r = anon.post("/gateway/recommend", json={"policy": {"allowed_providers": ["nope"]}})
    assert r.status_code == 400 and "daytona" in r.json()["error"]["message"]
    r = anon.post("/gateway/recommend", json={"policy": {"mode": "random"}})
    assert r.status_code == 422 and "cheapest" in r.json()["error"]["message"]
    r = anon.post("/gateway/recommend", json={"requirements": {"runtime": "ruby"}})
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["code"] == "no_provider_fits"
    assert error["details"]["requirements"]["e2b"] == ["requirements.runtime"]


def test_stress_simulate_sync_and_async(anon: httpx.Client) -> None:
    seed_body = {
        "task": "Compare preview launch backends",
        "kind": "preview_launch",
        "workload": "preview",
        "requirements": {
            "runtime": "node",
            "public_preview": True,
            "package_install": True,
            "timeout_minutes": 20,
        },
        "providers": ["vercel", "e2b"],
        "sample_size": 5,
    }
    r = anon.post("/gateway/stress-tests", json=seed_body)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "completed" and set(r.json()["results"]) == {"vercel", "e2b"}

    r = anon.post("/gateway/stress-tests", json={**seed_body, "sample_size": 20_000, "async": True})
    assert r.status_code == 200 and r.json()["status"] == "running"
    job = r.json()["id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        polled = anon.get(f"/gateway/stress-tests/{job}").json()
        if polled["status"] != "running":
            break
        time.sleep(0.1)
    assert polled["status"] == "completed" and polled["progress"] == 1.0
    assert anon.get("/gateway/stress-tests/stj_missing").status_code == 404


def test_stress_bad_input(anon: httpx.Client) -> None:
    r = anon.post("/gateway/stress-tests", json={"kind": "marathon"})
    assert r.status_code == 400 and "preview_launch" in r.json()["error"]["message"]
    r = anon.post("/gateway/stress-tests", json={"sample_size": 100_001})
    assert r.status_code == 422 and "100000" in r.json()["error"]["message"]
    r = anon.post("/gateway/stress-tests", json={"providers": ["nope"]})
    assert r.status_code == 400


def test_canary_needs_a_token_and_an_executable_provider(
    anon: httpx.Client, api: httpx.Client
) -> None:
    canary = {"mode": "canary", "kind": "code_exec", "sample_size": 2}
    assert anon.post("/gateway/stress-tests", json=canary).status_code == 401
    r = api.post("/gateway/stress-tests", json={**canary, "providers": ["modal"]})
    assert r.status_code == 409 and r.json()["error"]["code"] == "compute_unavailable"
    r = api.post("/gateway/stress-tests", json=canary)  # defaults to what is executable
    assert r.status_code == 200, r.text
    assert r.json()["results"]["local"]["successes"] == 2


def test_cli_runs_a_stress_test_and_prints_a_table(server: str) -> None:
    from typer.testing import CliRunner

    from cerver.stress.cli import stress_app

    result = CliRunner().invoke(
        stress_app,
        [
            "--url",
            server,
            "--kind",
            "code_exec",
            "-p",
            "e2b",
            "-p",
            "daytona",
            "-n",
            "2000",
            "--async",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "recommended:" in result.output
    assert "e2b" in result.output and "daytona" in result.output
