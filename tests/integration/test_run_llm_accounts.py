"""What an account or a session adds to run-llm, end to end on the shared Serve app:
an account's own openai-compatible endpoint and model list (seen by that account only),
and a session's own LLM budget (reserved before each call, like the account's)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import free_port
from tests.fakes.llm_process import FakeServer
from tests.integration.llm_fixtures import (
    assert_within_budget,
    concurrent_turns,
    fakes,
    fresh_api,
    transcript_only,
)

__all__ = ["fakes", "fresh_api"]  # fixtures used by name

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def own_endpoint() -> Iterator[FakeServer]:
    """A second OpenAI-compatible server: the account's own, apart from the deployment's."""
    fake = FakeServer("tests.fakes.openai", free_port())
    try:
        yield fake
    finally:
        fake.stop()


def test_an_accounts_own_models_reach_its_endpoint_only(
    api: httpx.Client,
    fresh_api: httpx.Client,
    fakes: dict[str, FakeServer],
    own_endpoint: FakeServer,
) -> None:
    own_endpoint.reset()
    key = "sk-own-" + uuid.uuid4().hex
    model = "my-llama-" + uuid.uuid4().hex[:6]
    made = fresh_api.post(
        "/v2/account/providers",
        json={
            "provider": "openai-compatible",
            "credentials": {"base_url": f"{own_endpoint.url}/v1", "api_key": key},
            "models": [model],
        },
    )
    assert made.status_code == 201, made.text
    assert made.json()["models"] == [model] and key not in made.text
    listed = fresh_api.get("/v2/account/providers").json()["providers"]
    assert [p["models"] for p in listed if p["provider"] == "openai-compatible"] == [[model]]

    sid = transcript_only(fresh_api)
    turn = fresh_api.post(f"/v2/sessions/{sid}/run-llm", json={"model": model, "input": "hi"})
    assert turn.status_code == 200, turn.text
    assert (turn.json()["model"], turn.json()["harness"]) == (model, "openai-compatible")
    # A turn without "model" on an openai-compatible session uses the account's first.
    compat = transcript_only(fresh_api, harness="openai-compatible")
    default = fresh_api.post(f"/v2/sessions/{compat}/run-llm", json={"input": "hello"})
    assert default.status_code == 200 and default.json()["model"] == model
    first, second = own_endpoint.received()
    assert first["path"] == "/v1/chat/completions"  # the account's base URL, not the deployment's
    assert first["body"]["model"] == second["body"]["model"] == model
    assert first["authorization"] == f"Bearer {key}"
    assert fakes["openai"].received() == []

    # Another account does not see the model: 400 listing the models it knows.
    other = transcript_only(api)
    refused = api.post(f"/v2/sessions/{other}/run-llm", json={"model": model, "input": "hi"})
    assert refused.status_code == 400
    known = refused.json()["error"]["details"]["known"]
    assert model not in known and "gpt-5" in known and "llama-3.1-8b" in known
    assert len(own_endpoint.received()) == 2


def test_model_lists_are_checked_at_registration(fresh_api: httpx.Client) -> None:
    endpoint = {"base_url": "http://127.0.0.1:9/v1"}
    cases = [
        ({"provider": "openai-compatible", "credentials": endpoint, "models": []}, "models"),
        ({"provider": "openai-compatible", "credentials": endpoint, "models": [""]}, "models[0]"),
        (
            {"provider": "openai-compatible", "credentials": endpoint, "models": ["gpt-5"]},
            "models[0]",
        ),
        ({"provider": "openai", "credentials": {"api_key": "k"}, "models": ["m"]}, "models"),
    ]
    for body, field in cases:
        r = fresh_api.post("/v2/account/providers", json=body)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["error"]["details"]["field"] == field
    assert fresh_api.get("/v2/account/providers").json()["providers"] == []


def test_twenty_concurrent_turns_never_overspend_a_session_budget(
    fresh_api: httpx.Client, fakes: dict[str, FakeServer]
) -> None:
    # gpt-5 with max_output_tokens 1000: a call's worst case is 1000 x $10/Mtok plus a few
    # dozen input tokens x $1.25/Mtok, just over $0.01: room for 5, not 6. No account budget.
    budget = 0.0525
    r = fresh_api.post(
        "/v2/sessions",
        json={"session_name": "budgeted", "compute": None, "llm_budget_usd": budget},
    )
    assert r.status_code == 201, r.text
    sid = r.json()["session_id"]
    limits = fresh_api.get(f"/v2/sessions/{sid}/limits").json()
    assert limits == {
        "session_id": sid,
        "llm_budget_usd": budget,
        "llm_spent_usd": 0.0,
        "llm_reserved_usd": 0.0,
    }
    fakes["openai"].script(*[{"delay_s": 3.0}] * 20)  # every call in flight at once
    body = {"model": "gpt-5", "input": "x", "max_output_tokens": 1000}
    answers = concurrent_turns(fresh_api, [sid], 20, body)
    limits = fresh_api.get(f"/v2/sessions/{sid}/limits").json()
    assert_within_budget(answers, fakes["openai"], room=5, limits=limits)
    error = next(a for a in answers if a.status_code == 402).json()["error"]
    assert error["code"] == "budget_exceeded" and error["details"]["scope"] == "session"
    assert f"PUT /v2/sessions/{sid}/limits" in error["message"]
    # The account has no budget of its own: only the session's held.
    assert fresh_api.get("/v2/account/limits").json()["llm_budget_source"] == "none"


def test_session_limits_are_set_removed_and_owned(
    api: httpx.Client, fresh_api: httpx.Client, fakes: dict[str, FakeServer]
) -> None:
    sid = transcript_only(fresh_api)
    assert fresh_api.get(f"/v2/sessions/{sid}/limits").json()["llm_budget_usd"] is None
    r = fresh_api.put(f"/v2/sessions/{sid}/limits", json={"llm_budget_usd": 0.001})
    assert r.status_code == 200 and r.json()["llm_budget_usd"] == 0.001
    length = fresh_api.get(f"/v2/sessions/{sid}").json()["transcript_length"]
    turn = fresh_api.post(f"/v2/sessions/{sid}/run-llm", json={"model": "gpt-5", "input": "hi"})
    assert turn.status_code == 402 and turn.json()["error"]["details"]["scope"] == "session"
    assert fakes["openai"].received() == []
    assert fresh_api.get(f"/v2/sessions/{sid}").json()["transcript_length"] == length
    assert fresh_api.put(f"/v2/sessions/{sid}/limits", json={"llm_budget_usd": None}).is_success
    assert fresh_api.post(
        f"/v2/sessions/{sid}/run-llm", json={"model": "gpt-5", "input": "hi"}
    ).is_success
    bad = fresh_api.put(f"/v2/sessions/{sid}/limits", json={"llm_budget_usd": -1})
    assert bad.status_code == 422
    assert api.get(f"/v2/sessions/{sid}/limits").status_code == 404  # another account's
    # The long form takes it too (and a bad value is refused before anything is made).
    r = fresh_api.post(
        "/v2/sessions",
        json={"task": "t", "policy": {"mode": "balanced"}, "llm_budget_usd": -0.5},
    )
    assert r.status_code == 422 and "llm_budget_usd" in r.text
    r = fresh_api.post(
        "/v2/sessions",
        json={"task": "t", "policy": {"mode": "balanced"}, "llm_budget_usd": 0.25},
    )
    assert r.status_code == 201, r.text
    long_form = r.json()["session_id"]
    assert fresh_api.get(f"/v2/sessions/{long_form}/limits").json()["llm_budget_usd"] == 0.25
    assert fresh_api.delete(f"/v2/sessions/{long_form}").is_success
