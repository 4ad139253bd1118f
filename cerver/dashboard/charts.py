"""Chart series for the session page, derived from transcript entries and the metrics state.
Pure functions: the page embeds their output as JSON and ``static/dashboard.js`` draws it."""

from __future__ import annotations

from typing import Any

from cerver.metrics import MetricsState
from cerver.store import TranscriptEntry


def exec_latency(entries: list[TranscriptEntry]) -> dict[str, list[float]]:
    """(time, duration_ms) of every finished exec, in transcript order."""
    xs: list[float] = []
    ys: list[float] = []
    for entry in entries:
        result = entry.content.get("result") if entry.type == "exec" else None
        if isinstance(result, dict) and isinstance(result.get("duration_ms"), int | float):
            xs.append(entry.ts)
            ys.append(float(result["duration_ms"]))
    return {"x": xs, "y": ys}


def cost_by_source(
    state: MetricsState, entries: list[TranscriptEntry], now: float
) -> list[dict[str, Any]]:
    """Spend per compute provider (segments x catalog price) and per model (the cost each
    model turn recorded), largest first."""
    totals: dict[str, float] = {}
    for seg in state.segments:
        key = f"compute: {seg.provider}"
        totals[key] = totals.get(key, 0.0) + seg.seconds(now) / 3600.0 * seg.price_per_hour_usd
    for entry in entries:
        model, cost = entry.content.get("model"), entry.content.get("cost_usd")
        if entry.type == "assistant" and isinstance(model, str) and isinstance(cost, int | float):
            key = f"model: {model}"
            totals[key] = totals.get(key, 0.0) + float(cost)
    return [
        {"source": k, "usd": round(v, 6)} for k, v in sorted(totals.items(), key=lambda kv: -kv[1])
    ]
