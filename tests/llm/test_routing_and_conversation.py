"""The pure parts of a turn: routing decisions worked out by hand, the cascade check, the
conversation rebuilt from transcript entries, and prices from genai-prices."""

from __future__ import annotations

import pytest

from cerver.llm.catalog import CATALOG
from cerver.llm.conversation import exchanges, history
from cerver.llm.prices import PriceTable
from cerver.llm.routing import choose, escalation_reason, features
from cerver.llm.types import Usage
from cerver.store import TranscriptEntry

PRICES = PriceTable({})
MODELS = [CATALOG[n] for n in ("gpt-5-nano", "gpt-5-mini", "gpt-5", "claude-opus-4-1")]
BLENDED = {m.name: PRICES.blended(m) for m in MODELS}


def test_difficulty_and_tier_by_hand() -> None:
    easy = features("hi", tools=False, depth=0, context_tokens=10)
    assert easy.difficulty() == 0.0
    # code 0.25 + 3 hard words x 0.15 + tools 0.15 = 0.85 -> tier 3
    hard = features(
        "debug the race condition, step by step\n```x```", tools=True, depth=0, context_tokens=10
    )
    assert hard.difficulty() == 0.85
    picks = {
        mode: choose(hard, MODELS, BLENDED, mode=mode, context_needed=100).model  # type: ignore[union-attr]
        for mode in ("cheapest", "balanced", "best")
    }
    # cheapest: tier >= 2 -> gpt-5-mini; balanced: tier 3 -> gpt-5 (cheaper than opus);
    # best: the highest tier, cheapest there -> gpt-5.
    assert picks == {"cheapest": "gpt-5-mini", "balanced": "gpt-5", "best": "gpt-5"}
    decision = choose(easy, MODELS, BLENDED, mode="balanced", context_needed=100)
    assert decision is not None and decision.model == "gpt-5-nano"
    assert decision.ladder == ["gpt-5-nano", "gpt-5-mini", "gpt-5"]


def test_context_window_excludes_a_model() -> None:
    turn = features("hi", tools=False, depth=0, context_tokens=300_000)
    decision = choose(turn, MODELS, BLENDED, mode="cheapest", context_needed=300_000)
    assert decision is not None and decision.model == "gpt-5-nano"  # 400k window
    opus = next(c for c in decision.candidates if c.model == "claude-opus-4-1")
    assert not opus.eligible and "context window" in (opus.why_not or "")


def test_escalation_reasons() -> None:
    assert escalation_reason("", "stop", False) == "empty answer"
    assert escalation_reason("I'm sorry, I can't", "stop", False) == "refusal"
    assert escalation_reason("half", "length", False) == "truncated (hit max_output_tokens)"
    assert escalation_reason("done", "stop", True) == "a tool error it did not recover from"
    assert escalation_reason("fine", "stop", False) is None


def _entries(*items: tuple[str, dict]) -> list[TranscriptEntry]:
    return [TranscriptEntry(seq=i + 1, ts=0.0, type=t, content=c) for i, (t, c) in enumerate(items)]


def test_conversation_from_the_transcript() -> None:
    entries = _entries(
        ("system", {"event": "created"}),
        ("user", {"text": "q1"}),
        ("tool_call", {"name": "run", "arguments": {"code": "ls"}}),
        ("exec", {"code": "ls"}),
        ("tool_result", {"output": "exit_code: 0"}),
        ("assistant", {"text": "a1", "model": "gpt-5"}),
        ("user", {"text": "q2"}),
        ("assistant", {"text": "nope", "superseded": "cascade escalated: refusal"}),
        ("assistant", {"text": "a2", "model": "claude-sonnet-4-5"}),
    )
    found = exchanges(entries)
    assert [(e.user, e.assistant.splitlines()[-1]) for e in found] == [("q1", "a1"), ("q2", "a2")]
    assert "[tool call run" in found[0].assistant and "exit_code: 0" in found[0].assistant
    messages, dropped = history(entries, budget_tokens=10_000)
    assert [m.role for m in messages] == ["user", "assistant", "user", "assistant"] and dropped == 0
    messages, dropped = history(entries, budget_tokens=3)  # only the last exchange fits
    assert [m.text for m in messages] == ["q2", "a2"] and dropped == 1


def test_prices_cached_and_cache_write_at_their_own_rates() -> None:
    sonnet = CATALOG["claude-sonnet-4-5"]
    # 1000 input tokens: 600 plain ($3/M), 300 cache reads ($0.30/M), 100 writes ($3.75/M)
    cost = PRICES.cost(
        sonnet,
        Usage(input_tokens=1000, cache_read_tokens=300, cache_write_tokens=100, output_tokens=10),
    )
    assert cost == pytest.approx((600 * 3 + 300 * 0.3 + 100 * 3.75 + 10 * 15) / 1e6)
    override = PriceTable({"gpt-5": {"input": 1.0, "output": 2.0, "cache_read": 0.5}})
    assert override.cost(
        CATALOG["gpt-5"], Usage(input_tokens=10, cache_read_tokens=4, output_tokens=1)
    ) == pytest.approx((6 * 1 + 4 * 0.5 + 1 * 2) / 1e6)
    assert PRICES.worst_case(sonnet, 100, 10) >= PRICES.cost(
        sonnet, Usage(input_tokens=100, output_tokens=10)
    )
