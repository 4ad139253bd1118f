"""Each harness against its fake over real HTTP, through the official SDK: the wire format
both ways (messages, tools, usage), streaming, and errors translated for the retry loop."""

from __future__ import annotations

import pytest

from cerver.llm.harnesses import UpstreamError, harness_class
from cerver.llm.harnesses.base import Endpoint
from cerver.llm.tools import RUN_TOOL
from cerver.llm.types import Call, Completion, Message, TextDelta, ToolCall
from tests.fakes.llm_process import FakeServer

pytestmark = pytest.mark.timeout(60)

CASES = {
    "openai": ("openai", "gpt-5", "/v1"),
    "anthropic": ("anthropic", "claude-sonnet-4-5", ""),
    "openai-compatible": ("openai", "llama-3.1-8b", "/v1"),
}


def _harness(name: str, fake: FakeServer, suffix: str):  # type: ignore[no-untyped-def]
    return harness_class(name)(Endpoint(api_key=f"key-for-{name}", base_url=fake.url + suffix))


@pytest.fixture(params=sorted(CASES))
def case(request, openai_fake, anthropic_fake):  # type: ignore[no-untyped-def]
    harness, model, suffix = CASES[request.param]
    fake = openai_fake if harness == "openai" else anthropic_fake
    return request.param, model, fake, suffix


def _call(model: str, **kw) -> Call:  # type: ignore[no-untyped-def]
    messages = [
        Message(role="user", text="first question"),
        Message(role="assistant", text="first answer"),
        Message(role="user", text="Review this migration"),
    ]
    return Call(model=model, system="be brief", messages=messages, max_output_tokens=64, **kw)


async def test_complete_sends_the_conversation_and_reads_usage(case) -> None:  # type: ignore[no-untyped-def]
    name, model, fake, suffix = case
    harness = _harness(name, fake, suffix)
    done = await harness.complete(_call(model))
    await harness.aclose()
    assert done.text == f"[{model}] answer to: Review this migration"
    assert done.finish_reason == "stop"
    # Words in: "be brief" + "first question" + "first answer" + "Review this migration" = 9.
    assert done.usage is not None
    assert (done.usage.input_tokens, done.usage.output_tokens) == (9, 6)
    [got] = fake.received()
    sent = str(got["body"])
    assert "first question" in sent and "first answer" in sent and "be brief" in sent
    key = got["x_api_key"] or got["authorization"]  # anthropic's SDK sends either
    assert key is not None and key.endswith(f"key-for-{name}")


async def test_stream_yields_deltas_then_the_completion(case) -> None:  # type: ignore[no-untyped-def]
    name, model, fake, suffix = case
    fake.script({"text": "one two three four five six", "chunks": 3})
    harness = _harness(name, fake, suffix)
    items = [item async for item in harness.stream(_call(model))]
    await harness.aclose()
    deltas = [i.text for i in items if isinstance(i, TextDelta)]
    final = items[-1]
    assert isinstance(final, Completion)
    assert len(deltas) >= 2 and "".join(deltas) == "one two three four five six"
    assert final.text == "one two three four five six"
    assert final.usage is not None and final.usage.output_tokens == 6
    assert fake.received()[0]["stream"] is True


async def test_tool_calls_round_trip(case) -> None:  # type: ignore[no-untyped-def]
    name, model, fake, suffix = case
    fake.script({"tool_call": {"name": "run", "arguments": {"code": "echo hi"}}})
    harness = _harness(name, fake, suffix)
    call = _call(model, tools=[RUN_TOOL])
    first = await harness.complete(call)
    assert first.finish_reason == "tool_calls"
    [tool_call] = first.tool_calls
    assert (tool_call.name, tool_call.arguments) == ("run", {"code": "echo hi"})
    follow = call.model_copy(
        update={
            "messages": [
                *call.messages,
                Message(role="assistant", tool_calls=[ToolCall(**tool_call.model_dump())]),
                Message(role="tool", tool_call_id=tool_call.id, text="exit_code: 0 stdout: hi"),
            ]
        }
    )
    second = await harness.complete(follow)
    await harness.aclose()
    assert second.finish_reason == "stop"
    received = fake.received()
    assert "run" in str(received[0]["body"].get("tools"))
    assert tool_call.id in str(received[1]["body"]) and "stdout: hi" in str(received[1]["body"])


async def test_errors_are_translated_with_retry_after(case) -> None:  # type: ignore[no-untyped-def]
    name, model, fake, suffix = case
    fake.script({"status": 429, "retry_after": "3"}, {"status": 500}, {"status": 400})
    harness = _harness(name, fake, suffix)
    errors = []
    for _ in range(3):
        with pytest.raises(UpstreamError) as caught:
            await harness.complete(_call(model))
        errors.append(caught.value)
    await harness.aclose()
    assert [(e.kind, e.status, e.retry_after_s) for e in errors] == [
        ("rate_limited", 429, 3.0),
        ("server_error", 500, None),
        ("client_error", 400, None),
    ]
    assert [e.retryable for e in errors] == [True, True, False]
    assert len(fake.received()) == 3  # the SDK's own retries are off


async def test_a_slow_upstream_times_out(case) -> None:  # type: ignore[no-untyped-def]
    name, model, fake, suffix = case
    fake.script({"delay_s": 2.0})
    harness = harness_class(name)(Endpoint(api_key="k", base_url=fake.url + suffix, timeout_s=0.5))
    with pytest.raises(UpstreamError) as caught:
        await harness.complete(_call(model))
    await harness.aclose()
    assert caught.value.kind == "timeout" and caught.value.retryable
