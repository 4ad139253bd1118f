"""Session metrics: the raw counters a session actor keeps, and the seed's metrics view
computed from them. Pure functions, no I/O.

Definitions (see docs/metrics.md):
- cost: every compute segment (a sandbox attached to the session) costs its wall-clock
  lifetime x the provider's catalog price per hour, the way sandbox providers bill.
- uptime_percent: provider operations (provisions, runs) that did not fail at the provider,
  over all of them; 100 before the first operation has completed.
- engagement: score 0..100 from the number of interactions, decayed by idle time; label
  ``idle`` after IDLE_AFTER_S without activity, else warming < 30 <= engaged < 70 <= deep.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, Field

from cerver.models import SessionMetrics

IDLE_AFTER_S = 15 * 60
DECAY_S = 30 * 60


class Segment(BaseModel):
    provider: str
    price_per_hour_usd: float
    start: float
    end: float | None = None

    def seconds(self, now: float) -> float:
        return max(0.0, (self.end if self.end is not None else now) - self.start)


class MetricsState(BaseModel):
    provision_time_ms: float | None = None
    predicted_startup_ms: float | None = None
    first_exec_at: float | None = None
    last_exec_latency_ms: float | None = None
    exec_latency_sum_ms: float = 0.0
    total_exec_count: int = 0
    stream_open_sum_ms: float = 0.0
    total_stream_count: int = 0
    interaction_count: int = 0
    last_activity_at: float | None = None
    ops_total: int = 0
    ops_ok: int = 0
    egress_denied_count: int = 0  # connections the egress allowlist refused (network.allow)
    segments: list[Segment] = Field(default_factory=list)

    @classmethod
    def load(cls, raw: dict[str, Any] | None) -> MetricsState:
        return cls.model_validate(raw or {})

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    # --- updates ---------------------------------------------------------------------
    def op(self, ok: bool) -> None:
        self.ops_total += 1
        self.ops_ok += int(ok)

    def attach(self, provider: str, price_per_hour_usd: float, at: float) -> None:
        self.detach(at)
        self.segments.append(
            Segment(provider=provider, price_per_hour_usd=price_per_hour_usd, start=at)
        )

    def detach(self, at: float) -> None:
        for seg in self.segments:
            if seg.end is None:
                seg.end = at

    def exec_done(
        self, latency_ms: float, at: float, *, stream: bool = False, stream_open_ms: float = 0.0
    ) -> None:
        if self.first_exec_at is None:
            self.first_exec_at = at
        if stream:
            self.total_stream_count += 1
            self.stream_open_sum_ms += stream_open_ms
        else:
            self.total_exec_count += 1
            self.exec_latency_sum_ms += latency_ms
            self.last_exec_latency_ms = latency_ms
        self.interaction(at)

    def interaction(self, at: float) -> None:
        self.interaction_count += 1
        self.last_activity_at = at


def engagement(interactions: int, idle_s: float) -> tuple[float, str]:
    score = 100.0 * (1.0 - math.exp(-interactions / 8.0)) * math.exp(-idle_s / DECAY_S)
    if idle_s > IDLE_AFTER_S:
        return round(score, 1), "idle"
    if score < 30:
        return round(score, 1), "warming"
    if score < 70:
        return round(score, 1), "engaged"
    return round(score, 1), "deep"


def view(state: MetricsState, *, created_at: float, now: float) -> SessionMetrics:
    compute_s = sum(seg.seconds(now) for seg in state.segments)
    cost = sum(seg.seconds(now) / 3600.0 * seg.price_per_hour_usd for seg in state.segments)
    idle_s = now - (state.last_activity_at or created_at)
    score, label = engagement(state.interaction_count, idle_s)
    return SessionMetrics(
        provision_time_ms=state.provision_time_ms,
        time_to_first_exec_ms=(
            round((state.first_exec_at - created_at) * 1000.0, 3) if state.first_exec_at else None
        ),
        last_exec_latency_ms=state.last_exec_latency_ms,
        average_exec_latency_ms=(
            round(state.exec_latency_sum_ms / state.total_exec_count, 3)
            if state.total_exec_count
            else None
        ),
        average_stream_open_latency_ms=(
            round(state.stream_open_sum_ms / state.total_stream_count, 3)
            if state.total_stream_count
            else None
        ),
        total_exec_count=state.total_exec_count,
        total_stream_count=state.total_stream_count,
        interaction_count=state.interaction_count,
        session_length_ms=round(max(0.0, now - created_at) * 1000.0, 3),
        cost_estimate_usd=round(cost, 8),
        uptime_percent=round(100.0 * state.ops_ok / state.ops_total, 2)
        if state.ops_total
        else 100.0,
        predicted_startup_ms=state.predicted_startup_ms,
        engagement_score=score,
        engagement_label=label,  # type: ignore[arg-type]
        compute_seconds=round(compute_s, 3),
        egress_denied_count=state.egress_denied_count,
    )
