"""run-llm tools that run in the session's compute, and ``"model": "auto"`` routing with a
cascade, end to end (real sandboxes on the `local` provider, fake model upstreams)."""

from __future__ import annotations

import httpx
import pytest

from tests.fakes.llm_process import FakeServer
from tests.integration.llm_fixtures import fakes, sse_events, transcript_only

__all__ = ["fakes"]

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def with_compute(api: httpx.Client) -> str:
    r = api.post("/v2/sessions", json={"compute": {"provider": "local"}, "harness": "openai"})
    assert r.status_code == 201, r.text
    return str(r.json()["session_id"])


def test_the_run_tool_runs_in_the_session_compute(
    api: httpx.Client, fakes: dict[str, FakeServer]
) -> None:
    sid = with_compute(api)
    fakes["openai"].script(
        {"tool_call": {"name": "run", "arguments": {"code": "echo hello-from-the-sandbox"}}},
        {"text": "The command printed hello-from-the-sandbox."},
    )
    r = api.post(
        f"/v2/sessions/{sid}/run-llm",
        json={"model": "gpt-5", "input": "run echo for me", "tools": ["run"]},
    )
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["output"] == "The command printed hello-from-the-sandbox."
    [step] = answer["steps"]
    assert step["tool_call"]["arguments"] == {"code": "echo hello-from-the-sandbox"}
    assert step["tool_result"]["exit_code"] == 0
    assert "hello-from-the-sandbox" in step["tool_result"]["output"]

    first, second = fakes["openai"].received()
    assert [t["name"] for t in first["body"]["tools"]] == ["run"]
    outputs = [i for i in second["body"]["input"] if i.get("type") == "function_call_output"]
    assert len(outputs) == 1 and "hello-from-the-sandbox" in outputs[0]["output"]
    # Usage and cost are summed over both upstream calls.
    m = api.get(f"/v2/sessions/{sid}/metrics").json()["metrics"]
    assert m["llm_by_model"]["gpt-5"]["calls"] == 2 and m["llm_turn_count"] == 1
    assert m["llm_cost_usd"] == pytest.approx(answer["cost_usd"])
    assert answer["usage"]["input_tokens"] == m["llm_input_tokens"]

    # The run is an exec entry like POST /run's, between tool_call and tool_result.
    view = api.get(f"/v2/sessions/{sid}", params={"full": 1}).json()
    kinds = [e["type"] for e in view["transcript"] if e["type"] != "compute"][1:]
    assert kinds == ["user", "tool_call", "exec", "tool_result", "assistant"]
    exec_entry = next(e for e in view["transcript"] if e["type"] == "exec")
    assert step["tool_result"]["exec_seq"] == exec_entry["seq"]
    assert exec_entry["content"]["result"]["stdout"].strip() == "hello-from-the-sandbox"


def test_streamed_tool_steps_and_max_steps(api: httpx.Client, fakes: dict[str, FakeServer]) -> None:
    sid = with_compute(api)
    call = {"tool_call": {"name": "run", "arguments": {"code": "exit 3"}}}
    fakes["anthropic"].script(call, call, call)
    body = {
        "model": "claude-sonnet-4-5",
        "input": "keep trying",
        "tools": ["run"],
        "max_steps": 2,
        "stream": True,
    }
    with api.stream("POST", f"/v2/sessions/{sid}/run-llm", json=body) as r:
        assert r.status_code == 200
        events = sse_events(r)
    kinds = [k for k, _ in events]
    assert kinds == ["tool_call", "tool_result", "tool_call", "tool_result", "done"]
    assert events[1][1]["exit_code"] == 3 and events[1][1]["is_error"] is True
    assert events[-1][1]["finish_reason"] == "max_steps"
    # The second call carried the first tool_result back as an Anthropic tool_result block.
    second = fakes["anthropic"].received()[1]["body"]["messages"]
    blocks = [b for m in second for b in m["content"] if isinstance(b, dict)]
    assert any(b["type"] == "tool_result" and b["is_error"] for b in blocks)


def test_auto_routes_each_turn_by_policy(api: httpx.Client, fakes: dict[str, FakeServer]) -> None:
    sid = transcript_only(api)

    def auto(text: str, **policy: object) -> dict:
        r = api.post(
            f"/v2/sessions/{sid}/run-llm", json={"model": "auto", "input": text, "policy": policy}
        )
        assert r.status_code == 200, r.text
        return r.json()

    easy = auto("hi", mode="cheapest")
    # The cheapest model with a price: the deployment's llama-3.1-8b ($0.1/$0.2 per Mtok).
    assert easy["model"] == "llama-3.1-8b" and easy["harness"] == "openai-compatible"
    assert easy["routing"]["chosen_model"] == "llama-3.1-8b"
    assert "cheapest" in easy["routing"]["reason"]

    hard = auto(
        "Debug this race condition step by step and analyze the design:\n```\ndef f(): ...\n```",
        mode="balanced",
    )
    assert hard["routing"]["needed_tier"] == 3
    assert hard["model"] == "gpt-5"  # the cheapest tier-3 model
    assert "code" in hard["routing"]["reason"]

    best = auto("hi", mode="best", allowed_models=["claude-haiku-4-5", "claude-opus-4-1"])
    assert best["model"] == "claude-opus-4-1"
    names = {c["model"] for c in best["routing"]["candidates"]}
    assert names == {"claude-haiku-4-5", "claude-opus-4-1"}

    r = api.post(
        f"/v2/sessions/{sid}/run-llm",
        json={"model": "gpt-5", "input": "x", "policy": {"mode": "best"}},
    )
    assert r.status_code == 400 and r.json()["error"]["details"]["field"] == "policy"


def test_cascade_escalates_a_refusal_within_the_turn(
    api: httpx.Client, fakes: dict[str, FakeServer]
) -> None:
    sid = transcript_only(api)
    fakes["openai"].script({"model": "gpt-5-nano", "text": "I'm sorry, I can't help with that."})
    r = api.post(
        f"/v2/sessions/{sid}/run-llm",
        json={
            "model": "auto",
            "input": "summarise this",
            "policy": {
                "mode": "cheapest",
                "allowed_models": ["gpt-5-nano", "gpt-5-mini", "gpt-5"],
                "cascade": True,
            },
        },
    )
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["model"] == "gpt-5-mini"
    assert answer["routing"]["chosen_model"] == "gpt-5-nano"
    assert answer["routing"]["cascade"] == ["gpt-5-nano", "gpt-5-mini", "gpt-5"]
    assert "refusal" in answer["routing"]["reason"]
    assert [q["body"]["model"] for q in fakes["openai"].received()] == ["gpt-5-nano", "gpt-5-mini"]
    # Both attempts are in the transcript and in the cost.
    entries = api.get(f"/v2/sessions/{sid}", params={"tail": 2}).json()["transcript"]
    rejected, final = entries
    assert rejected["content"]["model"] == "gpt-5-nano" and rejected["content"]["superseded"]
    assert final["content"]["model"] == "gpt-5-mini" and final["seq"] == answer["seq"]
    m = api.get(f"/v2/sessions/{sid}/metrics").json()["metrics"]
    assert set(m["llm_by_model"]) == {"gpt-5-nano", "gpt-5-mini"}
    assert m["llm_cost_usd"] == pytest.approx(answer["cost_usd"])
    # The next turn does not see the rejected answer.
    api.post(f"/v2/sessions/{sid}/run-llm", json={"model": "gpt-5", "input": "thanks"})
    last = fakes["openai"].received()[-1]["body"]["input"]
    assert "I'm sorry" not in str(last)


def test_a_streamed_cascade_streams_only_the_answer_it_keeps(
    api: httpx.Client, fakes: dict[str, FakeServer]
) -> None:
    sid = transcript_only(api)
    fakes["openai"].script({"model": "gpt-5-nano", "text": ""})  # empty: escalate
    body = {
        "model": "auto",
        "input": "hello",
        "stream": True,
        "policy": {"mode": "cheapest", "allowed_models": ["gpt-5-nano", "gpt-5"], "cascade": True},
    }
    with api.stream("POST", f"/v2/sessions/{sid}/run-llm", json=body) as r:
        assert r.status_code == 200
        assert r.headers["X-Cerver-Model"] == "gpt-5"
        events = sse_events(r)
    text = "".join(d["text"] for k, d in events if k == "delta")
    assert text == "[gpt-5] answer to: hello"
    assert (
        events[-1][1]["model"] == "gpt-5" and "empty answer" in events[-1][1]["routing"]["reason"]
    )
    nano, top = fakes["openai"].received()
    assert (nano["stream"], top["stream"]) == (False, True)
