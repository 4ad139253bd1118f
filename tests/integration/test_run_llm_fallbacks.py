"""Retries, fallbacks and budgets of run-llm end to end: 429 with Retry-After, 5xx and
timeouts retried by Cerver (the SDKs' retries are off, so every try reaches the fake),
then the next model in ``fallbacks``; ``attempts`` lists them all. Budgets: 402 before any
upstream call, and 50 concurrent turns against a budget with room for 10."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.fakes.llm_process import FakeServer
from tests.integration.llm_fixtures import (
    assert_within_budget,
    concurrent_turns,
    fakes,
    fresh_api,
    transcript_only,
)

__all__ = ["fakes", "fresh_api"]

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_retries_then_the_next_model(api: httpx.Client, fakes: dict[str, FakeServer]) -> None:
    sid = transcript_only(api)
    fakes["openai"].script(
        {"model": "gpt-5", "status": 429, "retry_after": "1"},
        {"model": "gpt-5", "status": 500},
        {"model": "gpt-5", "status": 503},
    )
    started = time.monotonic()
    r = api.post(
        f"/v2/sessions/{sid}/run-llm",
        json={"model": "gpt-5", "input": "hi", "fallbacks": ["claude-sonnet-4-5"]},
    )
    took = time.monotonic() - started
    assert r.status_code == 200, r.text
    answer = r.json()
    assert (answer["model"], answer["harness"]) == ("claude-sonnet-4-5", "anthropic")
    tries = [(a["model"], a["status"], a["wait_ms"]) for a in answer["attempts"]]
    # Retry-After: 1 s honoured; then backoff 0.5 s; the third failure moves on at once.
    assert tries == [
        ("gpt-5", 429, 1000.0),
        ("gpt-5", 500, 500.0),
        ("gpt-5", 503, 0.0),
        ("claude-sonnet-4-5", "ok", 0.0),
    ]
    assert took >= 1.5
    assert len(fakes["openai"].received()) == 3  # every try reached the upstream
    assert len(fakes["anthropic"].received()) == 1
    entry = api.get(f"/v2/sessions/{sid}", params={"tail": 1}).json()["transcript"][0]
    assert len(entry["content"]["attempts"]) == 4


def test_a_timeout_is_retried_and_a_long_retry_after_skips_ahead(
    api: httpx.Client, fakes: dict[str, FakeServer]
) -> None:
    sid = transcript_only(api)
    fakes["openai"].script({"model": "gpt-5", "delay_s": 8})  # over the 5 s test timeout
    r = api.post(f"/v2/sessions/{sid}/run-llm", json={"model": "gpt-5", "input": "hi"})
    assert r.status_code == 200, r.text
    assert [a["status"] for a in r.json()["attempts"]] == ["timeout", "ok"]

    # Retry-After beyond CERVER_LLM_RETRY_MAX_WAIT_S (2 s here): straight to the fallback.
    fakes["openai"].script({"model": "gpt-5", "status": 429, "retry_after": "60"})
    r = api.post(
        f"/v2/sessions/{sid}/run-llm",
        json={"model": "gpt-5", "input": "hi", "fallbacks": ["gpt-5-mini"]},
    )
    assert r.status_code == 200, r.text
    assert [(a["model"], a["status"]) for a in r.json()["attempts"]] == [
        ("gpt-5", 429),
        ("gpt-5-mini", "ok"),
    ]


def test_every_try_failing_answers_502_with_the_attempts(
    api: httpx.Client, fakes: dict[str, FakeServer]
) -> None:
    sid = transcript_only(api)
    fakes["anthropic"].script(*[{"status": 500}] * 3)
    r = api.post(f"/v2/sessions/{sid}/run-llm", json={"model": "claude-haiku-4-5", "input": "hi"})
    assert r.status_code == 502
    err = r.json()["error"]
    assert err["code"] == "upstream_failed"
    assert [a["status"] for a in err["details"]["attempts"]] == [500, 500, 500]
    # A client error is not retried.
    fakes["anthropic"].script({"status": 400})
    r = api.post(f"/v2/sessions/{sid}/run-llm", json={"model": "claude-haiku-4-5", "input": "hi"})
    assert r.status_code == 502 and len(r.json()["error"]["details"]["attempts"]) == 1
    # The user entries stay; nothing is charged for failed tries.
    m = api.get(f"/v2/sessions/{sid}/metrics").json()["metrics"]
    assert m["llm_cost_usd"] == 0.0


def test_over_budget_answers_402_before_any_upstream_call(
    fresh_api: httpx.Client, fakes: dict[str, FakeServer]
) -> None:
    r = fresh_api.put("/v2/account/limits", json={"llm_budget_usd": 0.001})
    assert r.status_code == 200, r.text
    assert r.json()["llm_budget_usd"] == 0.001 and r.json()["llm_budget_source"] == "account"
    sid = transcript_only(fresh_api)
    length = fresh_api.get(f"/v2/sessions/{sid}").json()["transcript_length"]
    # Worst case: 4,096 output tokens of gpt-5 at $10/Mtok = $0.04 > $0.001.
    r = fresh_api.post(f"/v2/sessions/{sid}/run-llm", json={"model": "gpt-5", "input": "hi"})
    assert r.status_code == 402
    err = r.json()["error"]
    assert err["code"] == "budget_exceeded" and err["details"]["budget_usd"] == 0.001
    assert "max_output_tokens" in err["message"]
    assert fakes["openai"].received() == []
    assert fresh_api.get(f"/v2/sessions/{sid}").json()["transcript_length"] == length
    # Lower max_output_tokens and it fits.
    r = fresh_api.post(
        f"/v2/sessions/{sid}/run-llm",
        json={"model": "gpt-5", "input": "hi", "max_output_tokens": 50},
    )
    assert r.status_code == 200, r.text
    assert fakes["openai"].received()[0]["body"]["max_output_tokens"] == 50
    limits = fresh_api.get("/v2/account/limits").json()
    assert limits["llm_spent_usd"] == pytest.approx(r.json()["cost_usd"])
    assert limits["llm_reserved_usd"] == 0.0


def test_fifty_concurrent_turns_never_overspend(
    fresh_api: httpx.Client, fakes: dict[str, FakeServer]
) -> None:
    # gpt-5 with max_output_tokens 1000: the worst case of a call is 1000 x $10/Mtok plus
    # at most ~40 input tokens x $1.25/Mtok, i.e. just over $0.01: room for 10, not 11.
    budget = 0.105
    assert fresh_api.put("/v2/account/limits", json={"llm_budget_usd": budget}).status_code == 200
    sessions = [transcript_only(fresh_api) for _ in range(5)]
    fakes["openai"].script(*[{"delay_s": 3.0}] * 50)  # every call in flight at once
    body = {"model": "gpt-5", "input": "x", "max_output_tokens": 1000}
    answers = concurrent_turns(fresh_api, sessions, 50, body)
    limits = fresh_api.get("/v2/account/limits").json()
    assert_within_budget(answers, fakes["openai"], room=10, limits=limits)
