"""The LLM part of a session's metrics, from its settled calls (the spend ledger):
tokens, cost, a per-model breakdown, the premium-everywhere baseline and the savings
against it (negative when turns chose a pricier model than the premium one: reported as
it is). ``cost_estimate_usd`` becomes compute cost + LLM cost. Pure, no I/O."""

from __future__ import annotations

from typing import Any

from cerver.models import SessionMetrics
from cerver.store.llm_spend import SpendRow


def with_llm(metrics: SessionMetrics, calls: list[SpendRow]) -> SessionMetrics:
    by_model: dict[str, dict[str, Any]] = {}
    turns: set[str] = set()
    for call in calls:
        slot = by_model.setdefault(
            call.model,
            {"calls": 0, "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0},
        )
        slot["calls"] += 1
        slot["input_tokens"] += call.input_tokens
        slot["output_tokens"] += call.output_tokens
        slot["cost_usd"] += call.cost_usd
        turns.add(call.turn_id or f"call-{id(call)}")
    for slot in by_model.values():
        slot["cost_usd"] = round(slot["cost_usd"], 10)
    cost = sum(c.cost_usd for c in calls)
    baseline = sum(c.baseline_usd for c in calls)
    return metrics.model_copy(
        update={
            "llm_turn_count": len(turns),
            "llm_input_tokens": sum(c.input_tokens for c in calls),
            "llm_output_tokens": sum(c.output_tokens for c in calls),
            "llm_cost_usd": round(cost, 10),
            "llm_cost_estimated": any(c.estimated for c in calls),
            "llm_by_model": by_model,
            "premium_baseline_usd": round(baseline, 10),
            "savings_usd": round(baseline - cost, 10),
            "cost_estimate_usd": round(metrics.cost_estimate_usd + cost, 8),
        }
    )
