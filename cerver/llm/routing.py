"""``"model": "auto"``: pick each turn's model, as a pure pipeline (no I/O):

1. features of the turn: its length, whether it carries code, the words of hard reasoning,
   whether tools are requested, how deep the conversation is, how much context it needs;
2. a difficulty in 0..1 from those features (weights below), hence the quality tier the
   turn needs (1 below 0.34, 2 below 0.67, else 3);
3. candidates: the catalog models this deployment can call (and the policy allows) whose
   context window holds the turn;
4. the policy: ``cheapest`` takes the cheapest model one tier below the need (never below
   1), ``balanced`` the cheapest model at the needed tier or above, ``best`` the cheapest
   of the highest tier there is;
5. the answer: the model, the reason in words, and every candidate with its tier, price
   and whether it was eligible.

With ``cascade``, the ladder is the chosen model and then the cheapest model of each higher
tier: an answer that fails ``escalation_reason`` is retried one rung up, within the turn.
"""

from __future__ import annotations

import re

from pydantic import BaseModel

from cerver.llm.catalog import ModelEntry

HARD_WORDS = re.compile(
    r"\b(prove|proof|derive|debug|race condition|deadlock|architecture|design|optimi[sz]e|"
    r"trade-?offs?|step by step|reason|analy[sz]e|migration|refactor|security|concurren\w*|"
    r"complexity|algorithm|theorem|why)\b",
    re.IGNORECASE,
)
CODE = re.compile(r"```|\bdef |\bclass |\bimport |\bSELECT\b|\bfunction\b|=>|;\s*$|\{\s*$", re.M)
REFUSAL = re.compile(
    r"^\s*(i'?m sorry|i cannot|i can'?t|i am unable|i'?m unable|as an ai)", re.IGNORECASE
)

# How much each feature adds to the difficulty (capped at 1).
WEIGHTS = {
    "long_input": 0.25,  # more than 2,000 characters
    "code": 0.25,
    "hard_words": 0.15,  # per distinct word, at most 3
    "tools": 0.15,
    "deep_conversation": 0.1,  # more than 6 earlier exchanges
    "large_context": 0.15,  # more than 32k tokens of context
}


class Features(BaseModel):
    input_chars: int
    has_code: bool
    hard_words: list[str]
    tools: bool
    depth: int
    context_tokens: int

    def difficulty(self) -> float:
        score = 0.0
        score += WEIGHTS["long_input"] if self.input_chars > 2000 else 0.0
        score += WEIGHTS["code"] if self.has_code else 0.0
        score += WEIGHTS["hard_words"] * min(3, len(self.hard_words))
        score += WEIGHTS["tools"] if self.tools else 0.0
        score += WEIGHTS["deep_conversation"] if self.depth > 6 else 0.0
        score += WEIGHTS["large_context"] if self.context_tokens > 32_000 else 0.0
        return round(min(1.0, score), 3)


def features(text: str, *, tools: bool, depth: int, context_tokens: int) -> Features:
    words = sorted({m.group(0).lower() for m in HARD_WORDS.finditer(text)})
    return Features(
        input_chars=len(text),
        has_code=bool(CODE.search(text)),
        hard_words=words,
        tools=tools,
        depth=depth,
        context_tokens=context_tokens,
    )


def tier_for(difficulty: float) -> int:
    return 1 if difficulty < 0.34 else 2 if difficulty < 0.67 else 3


class Candidate(BaseModel):
    model: str
    tier: int
    price_per_mtok_usd: float
    eligible: bool
    why_not: str | None = None


class Decision(BaseModel):
    model: str
    reason: str
    mode: str
    difficulty: float
    needed_tier: int
    features: Features
    candidates: list[Candidate]
    ladder: list[str]


def choose(
    turn: Features,
    entries: list[ModelEntry],
    prices: dict[str, float],
    *,
    mode: str,
    context_needed: int,
) -> Decision | None:
    """The model for the turn, or None when no candidate fits at all."""
    difficulty = turn.difficulty()
    needed = tier_for(difficulty)
    minimum = {"cheapest": max(1, needed - 1), "balanced": needed, "best": 0}[mode]
    candidates: list[Candidate] = []
    for e in sorted(entries, key=lambda e: (prices[e.name], e.name)):
        why = None
        if e.context_window < context_needed:
            why = f"context window {e.context_window} < {context_needed} tokens needed"
        candidates.append(
            Candidate(
                model=e.name,
                tier=e.tier,
                price_per_mtok_usd=round(prices[e.name], 6),
                eligible=why is None,
                why_not=why,
            )
        )
    fit = [c for c in candidates if c.eligible]
    if not fit:
        return None
    if mode == "best":
        top = max(c.tier for c in fit)
        pool = [c for c in fit if c.tier == top]
    else:
        pool = [c for c in fit if c.tier >= minimum] or [max(fit, key=lambda c: c.tier)]
    chosen = pool[0]  # candidates are sorted by price
    for c in candidates:
        if c.eligible and c not in pool:
            c.why_not = f"tier {c.tier} below the {minimum} this turn needs under {mode!r}"
    ladder = [chosen.model]
    for tier in sorted({c.tier for c in fit if c.tier > chosen.tier}):
        ladder.append(next(c.model for c in fit if c.tier == tier))
    reason = (
        f"{mode}: difficulty {difficulty} (needs tier {needed}"
        + (f"; signals: {', '.join(_signals(turn))}" if _signals(turn) else "")
        + f") -> {chosen.model}, the cheapest eligible tier-{chosen.tier} model "
        f"at ${chosen.price_per_mtok_usd:.4g}/Mtok"
    )
    return Decision(
        model=chosen.model,
        reason=reason,
        mode=mode,
        difficulty=difficulty,
        needed_tier=needed,
        features=turn,
        candidates=candidates,
        ladder=ladder,
    )


def _signals(turn: Features) -> list[str]:
    out = []
    if turn.input_chars > 2000:
        out.append("long input")
    if turn.has_code:
        out.append("code")
    if turn.hard_words:
        out.append("hard words " + "/".join(turn.hard_words[:3]))
    if turn.tools:
        out.append("tools")
    if turn.depth > 6:
        out.append("deep conversation")
    if turn.context_tokens > 32_000:
        out.append("large context")
    return out


def escalation_reason(text: str, finish_reason: str, unrecovered_tool_error: bool) -> str | None:
    """Why a cascade rung's answer is not good enough (None: it is)."""
    if finish_reason == "length":
        return "truncated (hit max_output_tokens)"
    if finish_reason == "refusal" or REFUSAL.match(text or ""):
        return "refusal"
    if not (text or "").strip():
        return "empty answer"
    if unrecovered_tool_error:
        return "a tool error it did not recover from"
    return None
