"""``POST /v2/sessions/:id/run-llm`` end to end: the shared Serve app, its harnesses on the
official SDKs, pointed at the fake OpenAI and Anthropic servers (tests/fakes/) over real
HTTP. What the fakes *received* is asserted: the prior turns, the tools, the key."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.conftest import FAKE_LLM_KEYS
from tests.fakes.llm_process import FakeServer
from tests.integration.llm_fixtures import fakes, fresh_api, transcript_only

__all__ = ["fakes", "fresh_api"]  # fixtures used by name

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

# USD per token (genai-prices' current rates for these models).
GPT5 = (1.25e-6, 10e-6)
SONNET45 = (3e-6, 15e-6)
OPUS41 = (15e-6, 75e-6)  # the premium baseline: the priciest model with a key


def test_the_docs_examples_verbatim(api: httpx.Client, fakes: dict[str, FakeServer]) -> None:
    sid = transcript_only(api)
    # The docs' two calls, bodies byte for byte.
    first = api.post(
        f"/v2/sessions/{sid}/run-llm",
        content='{ "model": "claude-sonnet-4-5", "input": "Review this migration" }',
        headers={"Content-Type": "application/json"},
    )
    assert first.status_code == 200, first.text
    second = api.post(
        f"/v2/sessions/{sid}/run-llm",
        content='{ "model": "gpt-5", "input": "Review this migration" }',
        headers={"Content-Type": "application/json"},
    )
    assert second.status_code == 200, second.text
    a, b = first.json(), second.json()

    # A catalog model picks its own harness, whatever the session's says.
    assert (a["model"], a["harness"]) == ("claude-sonnet-4-5", "anthropic")
    assert (b["model"], b["harness"]) == ("gpt-5", "openai")
    assert a["output"] == "[claude-sonnet-4-5] answer to: Review this migration"
    assert b["output"] == "[gpt-5] answer to: Review this migration"
    for answer in (a, b):
        assert answer["session_id"] == sid and answer["finish_reason"] == "stop"
        assert set(answer["usage"]) == {"input_tokens", "output_tokens"}
        assert answer["latency_ms"] > 0
    assert first.headers["X-Cerver-Model"] == "claude-sonnet-4-5"

    # Tokens are the fakes' word counts: turn 1 reads 3 words and writes 6; turn 2 reads
    # both turns (3 + 6 + 3 = 12) and writes 6.
    assert a["usage"] == {"input_tokens": 3, "output_tokens": 6}
    assert b["usage"] == {"input_tokens": 12, "output_tokens": 6}
    cost_a = 3 * SONNET45[0] + 6 * SONNET45[1]
    cost_b = 12 * GPT5[0] + 6 * GPT5[1]
    assert a["cost_usd"] == pytest.approx(cost_a)
    assert b["cost_usd"] == pytest.approx(cost_b)

    # Turn 2 on another model sees turn 1: what the OpenAI fake received.
    [anthropic_req] = fakes["anthropic"].received()
    [openai_req] = fakes["openai"].received()
    assert anthropic_req["body"]["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Review this migration"}]}
    ]
    assert openai_req["path"] == "/v1/responses"
    assert openai_req["body"]["input"] == [
        {"role": "user", "content": "Review this migration"},
        {"role": "assistant", "content": a["output"]},
        {"role": "user", "content": "Review this migration"},
    ]
    assert openai_req["authorization"] == f"Bearer {FAKE_LLM_KEYS['OPENAI_API_KEY']}"
    anthropic_key = anthropic_req["x_api_key"] or anthropic_req["authorization"]
    assert FAKE_LLM_KEYS["ANTHROPIC_API_KEY"] in anthropic_key

    # The transcript shows the two turns with their models; the answer's seq is the
    # assistant entry's.
    view = api.get(f"/v2/sessions/{sid}", params={"full": 1}).json()
    turns = [(e["type"], e["content"].get("model")) for e in view["transcript"][1:]]
    assert turns == [
        ("user", "claude-sonnet-4-5"),
        ("assistant", "claude-sonnet-4-5"),
        ("user", "gpt-5"),
        ("assistant", "gpt-5"),
    ]
    by_seq = {e["seq"]: e for e in view["transcript"]}
    assert by_seq[a["seq"]]["type"] == "assistant"
    assert by_seq[b["seq"]]["content"]["text"] == b["output"]
    assert by_seq[b["seq"]]["content"]["cost_usd"] == pytest.approx(cost_b)

    # Metrics: tokens, cost per model, the premium baseline and the savings.
    m = api.get(f"/v2/sessions/{sid}/metrics").json()["metrics"]
    baseline = (3 + 12) * OPUS41[0] + (6 + 6) * OPUS41[1]
    assert m["llm_turn_count"] == 2
    assert (m["llm_input_tokens"], m["llm_output_tokens"]) == (15, 12)
    assert m["llm_cost_usd"] == pytest.approx(cost_a + cost_b)
    assert m["llm_by_model"]["gpt-5"]["cost_usd"] == pytest.approx(cost_b)
    assert m["llm_by_model"]["claude-sonnet-4-5"]["input_tokens"] == 3
    assert m["premium_baseline_usd"] == pytest.approx(baseline)
    assert m["savings_usd"] == pytest.approx(baseline - cost_a - cost_b)
    assert m["cost_estimate_usd"] == pytest.approx(cost_a + cost_b, abs=1e-7)


def test_without_model_the_session_harness_picks_its_default(
    api: httpx.Client, fakes: dict[str, FakeServer]
) -> None:
    sid = transcript_only(api, harness="anthropic")
    r = api.post(f"/v2/sessions/{sid}/run-llm", json={"input": "hello", "system": "be terse"})
    assert r.status_code == 200, r.text
    assert (r.json()["model"], r.json()["harness"]) == ("claude-sonnet-4-5", "anthropic")
    [got] = fakes["anthropic"].received()
    assert got["body"]["system"] == "be terse"
    assert got["body"]["max_tokens"] == 4096  # the default max_output_tokens


def test_cached_and_reasoning_tokens_are_priced_at_their_own_rates(
    api: httpx.Client, fakes: dict[str, FakeServer]
) -> None:
    sid = transcript_only(api)
    words = " ".join(["word"] * 100)
    fakes["openai"].script({"cached": 80, "reasoning": 50, "text": "ok"})
    r = api.post(f"/v2/sessions/{sid}/run-llm", json={"model": "gpt-5", "input": words})
    assert r.status_code == 200, r.text
    # 100 input tokens, 80 of them cached (gpt-5 cache reads: $0.125/Mtok); 51 output
    # tokens of which 50 reasoning, billed at the output rate.
    expected = 20 * GPT5[0] + 80 * 0.125e-6 + 51 * GPT5[1]
    assert r.json()["usage"] == {"input_tokens": 100, "output_tokens": 51}
    assert r.json()["cost_usd"] == pytest.approx(expected)
    entry = api.get(f"/v2/sessions/{sid}", params={"tail": 1}).json()["transcript"][0]
    assert entry["content"]["usage"]["cache_read_tokens"] == 80
    assert entry["content"]["usage"]["reasoning_tokens"] == 50


def test_bad_requests_leave_nothing_behind(
    api: httpx.Client, other_api: httpx.Client, fakes: dict[str, FakeServer]
) -> None:
    sid = transcript_only(api)
    length = api.get(f"/v2/sessions/{sid}").json()["transcript_length"]

    r = api.post(f"/v2/sessions/{sid}/run-llm", json={"model": "gpt-6", "input": "hi"})
    assert r.status_code == 400
    assert r.json()["error"]["details"]["field"] == "model"
    assert "gpt-5" in r.json()["error"]["details"]["known"]

    r = api.post(f"/v2/sessions/{sid}/run-llm", json={"model": "gpt-5", "input": ""})
    assert r.status_code == 422
    r = api.post(f"/v2/sessions/{sid}/run-llm", json={"model": "gpt-5", "inptu": "x"})
    assert r.status_code == 422 and "inptu" in r.text
    r = api.post(f"/v2/sessions/{sid}/run-llm", json={"input": "x", "fallbacks": ["nope"]})
    assert r.status_code == 400
    r = api.post(
        f"/v2/sessions/{sid}/run-llm", json={"model": "gpt-5", "input": "x", "tools": ["run"]}
    )
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "compute_unavailable"
    details = r.json()["error"]["details"]
    assert "local" in details["usable_providers"] and "recommendation" in details
    assert "/compute" in r.json()["error"]["message"]
    r = other_api.post(f"/v2/sessions/{sid}/run-llm", json={"model": "gpt-5", "input": "x"})
    assert r.status_code == 404

    assert api.get(f"/v2/sessions/{sid}").json()["transcript_length"] == length
    assert fakes["openai"].received() == [] and fakes["anthropic"].received() == []


def test_an_accounts_own_key_overrides_the_deployments(
    api: httpx.Client, fresh_api: httpx.Client, fakes: dict[str, FakeServer]
) -> None:
    """POST /v2/account/providers {"provider": "openai", ...}: that account's turns reach the
    upstream with its key (the fake asserts what it received); other accounts keep the
    deployment's; the value is never shown back; deleting it restores the deployment's."""
    own_key = "sk-account-" + uuid.uuid4().hex
    made = fresh_api.post(
        "/v2/account/providers",
        json={"provider": "openai", "credentials": {"api_key": own_key}},
    )
    assert made.status_code == 201, made.text
    assert own_key not in made.text
    sid = transcript_only(fresh_api)
    turn = fresh_api.post(f"/v2/sessions/{sid}/run-llm", json={"model": "gpt-5", "input": "hi"})
    assert turn.status_code == 200, turn.text
    other = transcript_only(api)
    assert api.post(
        f"/v2/sessions/{other}/run-llm", json={"model": "gpt-5", "input": "hi"}
    ).is_success
    mine, theirs = fakes["openai"].received()
    assert mine["authorization"] == f"Bearer {own_key}"
    assert theirs["authorization"] == f"Bearer {FAKE_LLM_KEYS['OPENAI_API_KEY']}"
    assert fresh_api.delete("/v2/account/providers/openai").status_code == 200
    again = fresh_api.post(f"/v2/sessions/{sid}/run-llm", json={"model": "gpt-5", "input": "hi"})
    assert again.status_code == 200
    assert fakes["openai"].received()[-1]["authorization"] == (
        f"Bearer {FAKE_LLM_KEYS['OPENAI_API_KEY']}"
    )
