"""run-llm streaming (SSE) end to end, and the openai-compatible harness: deltas, the done
event with the full cost, the X-Cerver headers, a client that goes away (the upstream
call is cancelled, what was produced stays in the transcript), a stream without usage."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.fakes.llm_process import FakeServer
from tests.integration.llm_fixtures import fakes, sse_events, transcript_only

__all__ = ["fakes"]

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

TEXT = "alpha beta gamma delta epsilon zeta eta theta"


@pytest.mark.parametrize("model", ["gpt-5", "claude-sonnet-4-5"])
def test_a_streamed_turn(api: httpx.Client, fakes: dict[str, FakeServer], model: str) -> None:
    sid = transcript_only(api)
    fake = fakes["anthropic" if model.startswith("claude") else "openai"]
    fake.script({"text": TEXT, "chunks": 4})
    body = {"model": model, "input": "stream please", "stream": True}
    with api.stream("POST", f"/v2/sessions/{sid}/run-llm", json=body) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["X-Cerver-Session-Id"] == sid
        assert r.headers["X-Cerver-Model"] == model
        assert float(r.headers["X-Cerver-Stream-Latency-Ms"]) > 0
        events = sse_events(r)
    kinds = [k for k, _ in events]
    assert kinds[-1] == "done" and set(kinds[:-1]) == {"delta"} and len(kinds) >= 3
    assert "".join(d["text"] for k, d in events if k == "delta") == TEXT
    done = events[-1][1]
    assert done["model"] == model and done["output"] == TEXT
    assert done["usage"] == {"input_tokens": 2, "output_tokens": 8}
    assert done["cost_usd"] > 0  # a streamed turn is recorded at its full cost
    assert fake.received()[0]["stream"] is True
    entry = api.get(f"/v2/sessions/{sid}", params={"tail": 1}).json()["transcript"][0]
    assert entry["seq"] == done["seq"] and entry["content"]["text"] == TEXT
    assert entry["content"]["cost_usd"] == pytest.approx(done["cost_usd"])
    m = api.get(f"/v2/sessions/{sid}/metrics").json()["metrics"]
    assert m["llm_cost_usd"] == pytest.approx(done["cost_usd"])


def test_a_client_that_goes_away_cancels_upstream_and_keeps_what_was_produced(
    api: httpx.Client, fakes: dict[str, FakeServer]
) -> None:
    sid = transcript_only(api)
    long_text = " ".join(f"w{i}" for i in range(60))
    fakes["openai"].script({"text": long_text, "chunks": 60, "chunk_delay_s": 0.2})  # ~12 s
    body = {"model": "gpt-5", "input": "a long answer", "stream": True}
    with api.stream("POST", f"/v2/sessions/{sid}/run-llm", json=body) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        while not next(lines).startswith("data: "):
            pass  # the first delta arrived
    left = time.monotonic()
    # The upstream request is closed well before the fake would have finished.
    deadline = left + 8
    while time.monotonic() < deadline:
        [got] = fakes["openai"].received()
        if got["disconnected"]:
            break
        time.sleep(0.1)
    assert got["disconnected"] and not got["completed"]
    # What was produced is in the transcript, at an estimated cost.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        last = api.get(f"/v2/sessions/{sid}", params={"tail": 1}).json()["transcript"][0]
        if last["type"] == "assistant":
            break
        time.sleep(0.1)
    assert last["type"] == "assistant" and last["content"]["aborted"]
    assert last["content"]["text"] and long_text.startswith(last["content"]["text"])
    assert last["content"]["cost_estimated"] is True and last["content"]["cost_usd"] > 0
    m = api.get(f"/v2/sessions/{sid}/metrics").json()["metrics"]
    assert m["llm_turn_count"] == 1 and m["llm_cost_estimated"] is True


def test_openai_compatible_model_and_a_stream_without_usage(
    api: httpx.Client, fakes: dict[str, FakeServer]
) -> None:
    sid = transcript_only(api)
    r = api.post(f"/v2/sessions/{sid}/run-llm", json={"model": "llama-3.1-8b", "input": "hi"})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert (answer["model"], answer["harness"]) == ("llama-3.1-8b", "openai-compatible")
    # The deployment's price override: $0.1 / $0.2 per Mtok; 1 word in, 4 out.
    assert answer["cost_usd"] == pytest.approx(1 * 0.1e-6 + 4 * 0.2e-6)
    fakes["openai"].script({"no_usage": True, "text": "four words right here"})
    body = {"model": "llama-3.1-8b", "input": "again", "stream": True}
    with api.stream("POST", f"/v2/sessions/{sid}/run-llm", json=body) as s:
        done = sse_events(s)[-1][1]
    assert done["cost_estimated"] is True and done["cost_usd"] > 0
    first, second = fakes["openai"].received()
    assert first["path"] == second["path"] == "/v1/chat/completions"
    assert second["body"]["stream_options"] == {"include_usage": True}
    assert [m["role"] for m in second["body"]["messages"]] == ["user", "assistant", "user"]
    assert first["authorization"] == "Bearer no-key"  # no OPENAI_COMPATIBLE_API_KEY set
