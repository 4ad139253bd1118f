"""Aggregation and scoring of stress-test samples (numpy), after the sandbox leaderboards'
method:

1. keep the successful runs, sort them, drop the fastest and slowest 5% (``TRIM``);
2. take the median, p95 and p99 of what is left (linear interpolation);
3. score each against the kind's ceiling: ``max(0, 1 - value / ceiling)``;
4. weight them 0.60 / 0.25 / 0.15 and multiply by the success rate; x 100.

Cost per run = price per hour x mean run time (failed runs included) x sandboxes per run.
"""

from __future__ import annotations

import math

import numpy as np

from cerver.stress.kinds import Kind
from cerver.stress.models import ProviderReport, StressRecommendation
from cerver.stress.sample import RunSamples

TRIM = 0.05
SCORE_WEIGHTS: tuple[float, float, float] = (0.60, 0.25, 0.15)  # median, p95, p99
MS_PER_HOUR = 3_600_000.0


def trim(values: np.ndarray, fraction: float = TRIM) -> tuple[np.ndarray, int]:
    """Sorted values without the lowest and highest ``floor(fraction * n)``; and that count."""
    ordered = np.sort(values)
    k = math.floor(fraction * ordered.size)
    if k == 0 or ordered.size - 2 * k < 1:
        return ordered, 0
    return ordered[k : ordered.size - k], k


def metric_score(value: float, ceiling: float) -> float:
    return max(0.0, 1.0 - value / ceiling)


def stress_score(p50: float, p95: float, p99: float, success_rate: float, ceiling: float) -> float:
    w50, w95, w99 = SCORE_WEIGHTS
    parts = (
        w50 * metric_score(p50, ceiling)
        + w95 * metric_score(p95, ceiling)
        + w99 * metric_score(p99, ceiling)
    )
    return 100.0 * success_rate * parts


def report(samples: RunSamples, kind: Kind, price_per_hour_usd: float) -> ProviderReport:
    runs = samples.runs
    success_rate = samples.successes / runs if runs else 0.0
    mean_run_ms = samples.total_ms / runs if runs else 0.0
    cost = price_per_hour_usd * mean_run_ms / MS_PER_HOUR * kind.concurrency
    if samples.successes == 0:
        return ProviderReport(
            provider=samples.provider,
            samples=runs,
            successes=0,
            success_rate=0.0,
            trimmed_each_side=0,
            p50_ms=None,
            p95_ms=None,
            p99_ms=None,
            mean_ms=None,
            cost_per_run_usd=cost,
            score=0.0,
            errors=samples.errors[:5],
        )
    kept, k = trim(samples.ok_latency_ms.astype(np.float64))
    p50, p95, p99 = (float(v) for v in np.percentile(kept, [50, 95, 99]))
    return ProviderReport(
        provider=samples.provider,
        samples=runs,
        successes=samples.successes,
        success_rate=round(success_rate, 6),
        trimmed_each_side=k,
        p50_ms=round(p50, 3),
        p95_ms=round(p95, 3),
        p99_ms=round(p99, 3),
        mean_ms=round(float(kept.mean()), 3),
        cost_per_run_usd=cost,
        score=round(stress_score(p50, p95, p99, success_rate, kind.ceiling_ms), 3),
        errors=samples.errors[:5],
    )


def rank(reports: dict[str, ProviderReport]) -> list[str]:
    """Best score first; ties go to the cheaper run, then to the name."""
    return sorted(reports, key=lambda n: (-reports[n].score, reports[n].cost_per_run_usd, n))


def implied_recommendation(
    reports: dict[str, ProviderReport], ranking: list[str]
) -> StressRecommendation | None:
    if not ranking:
        return None
    best = reports[ranking[0]]
    if best.p50_ms is None:
        return None
    reason = (
        f"highest stress score {best.score:.1f}: p50 {best.p50_ms:.0f} ms, "
        f"p95 {best.p95_ms:.0f} ms, success {100 * best.success_rate:.1f}%, "
        f"${best.cost_per_run_usd:.6f} per run"
    )
    if len(ranking) > 1:
        runner = reports[ranking[1]]
        reason += f" (next: {runner.provider} {runner.score:.1f})"
    return StressRecommendation(provider=best.provider, score=best.score, reason=reason)
