"""The recommender, a pure pipeline (no I/O): hard filters -> score under the policy mode
-> pick among what this account can execute -> explain -> order the fallbacks.

    recommend(request, profiles, executable=None) -> Recommendation

Raises ``BadRequest`` for unknown provider names (listing the valid ones) and
``NoProviderFits`` (422) when nothing is left, with the reason each provider was excluded.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime

from cerver.adapters.catalog import ProviderProfile, check_names, reference_size
from cerver.errors import NoProviderFits
from cerver.gateway.confidence import confidence
from cerver.gateway.filters import BOOLEAN_FEATURES, Exclusion, exclusions
from cerver.gateway.models import (
    ProviderScore,
    Recommendation,
    RecommendRequest,
    Requirements,
)
from cerver.gateway.scoring import ranked, score_all

NOT_EXECUTABLE = "not executable for this account"

PRIMARY_REASON: dict[str, str] = {
    "cheapest": "Cheapest fit{for_workload}: ${price:g}/h for {size}",
    "fastest": "Fastest startup fit{for_workload}: p50 {p50:g} ms, p95 {p95:g} ms",
    "balanced": "Best balance of price and startup{for_workload}: ${price:g}/h, p50 {p50:g} ms",
    "reliable": "Most reliable fit{for_workload}: {uptime:g}% availability",
}


def _no_fit(excluded: dict[str, list[Exclusion]]) -> NoProviderFits:
    reasons = {p: "; ".join(e.reason for e in ex) for p, ex in excluded.items()}
    return NoProviderFits(
        "no provider fits the requirements and policy: "
        + "; ".join(f"{p}: {r}" for p, r in reasons.items()),
        details={
            "excluded": reasons,
            "requirements": {p: [e.requirement for e in ex] for p, ex in excluded.items()},
        },
    )


def _requirement_reasons(req: Requirements, profile: ProviderProfile) -> list[str]:
    reasons: list[str] = []
    if req.runtime is not None:
        reasons.append(f"Runtime {req.runtime} available")
    for feature, words in BOOLEAN_FEATURES.items():
        if getattr(req, feature):
            reasons.append(f"{words[0].upper()}{words[1:]} supported")
    if req.persistence_level is not None:
        have = profile.capabilities.persistence_level
        reasons.append(f"Persistence {have} meets {req.persistence_level}")
    if req.timeout_minutes is not None:
        limit = profile.capabilities.max_timeout_minutes
        reasons.append(f"Timeout {req.timeout_minutes:g} min within the {limit} min limit")
    return reasons


def _explain(
    request: RecommendRequest,
    profile: ProviderProfile,
    scores: dict[str, ProviderScore],
    order: list[str],
    excluded_count: int,
) -> tuple[str, list[str]]:
    workload = request.workload
    primary = PRIMARY_REASON[request.policy.mode].format(
        for_workload=f" for {workload} workloads" if workload else "",
        price=profile.price_per_hour_usd,
        size=reference_size(),
        p50=profile.startup.p50_ms,
        p95=profile.startup.p95_ms,
        uptime=profile.uptime_percent,
    )
    secondary: list[str] = []
    limit = request.policy.max_startup_ms
    if limit is not None:
        secondary.append(
            f"Startup within target (p50 {profile.startup_ms_p50:g} ms <= {limit:g} ms)"
        )
    secondary.extend(_requirement_reasons(request.requirements, profile))
    if len(order) > 1:
        runner = order[1]
        secondary.append(
            f"Score {scores[order[0]].score:.3f} vs {runner} {scores[runner].score:.3f}"
        )
    if not profile.startup.measured:
        secondary.append("Startup figure is an estimate, not yet measured")
    secondary.append(
        f"Startup figure: {profile.startup.sample_size} samples as of "
        f"{profile.startup.as_of.isoformat()}"
    )
    if excluded_count:
        secondary.append(f"{excluded_count} provider(s) excluded (see excluded)")
    return primary, secondary


def recommend(
    request: RecommendRequest,
    profiles: Sequence[ProviderProfile],
    executable: set[str] | None = None,
    *,
    today: date | None = None,
) -> Recommendation:
    """Pick a provider for ``request`` from ``profiles``.

    With ``executable``, only those providers can be recommended; the other feasible ones
    are still scored but listed in ``excluded`` as not executable for this account.
    """
    policy = request.policy
    check_names([*(policy.allowed_providers or []), *policy.blocked_providers], profiles)

    # 1. hard filters
    excluded: dict[str, list[Exclusion]] = {}
    feasible: list[ProviderProfile] = []
    for profile in profiles:
        found = exclusions(profile, request.requirements, policy)
        if found:
            excluded[profile.name] = found
        else:
            feasible.append(profile)

    # 2. score every feasible provider (executable or not)
    scores = score_all(feasible, policy.mode)

    # 3. only executable providers can be picked
    for name in ranked(scores):
        if executable is not None and name not in executable:
            excluded[name] = [Exclusion("executable", NOT_EXECUTABLE)]
    order = [n for n in ranked(scores) if n not in excluded]
    if not order:
        raise _no_fit(excluded)

    # 4. pick, explain, order the fallbacks
    best = order[0]
    profile = next(p for p in feasible if p.name == best)
    runner_up = scores[order[1]].score if len(order) > 1 else None
    conf = confidence(
        profile,
        policy.mode,
        scores[best].score,
        runner_up,
        today or datetime.now(tz=UTC).date(),
    )
    primary, secondary = _explain(request, profile, scores, order, len(excluded))
    return Recommendation(
        recommended_provider=best,
        confidence=conf.label,
        confidence_value=conf.value,
        primary_reason=primary,
        secondary_reasons=secondary,
        fallback_order=order[1:],
        canary_run=False,
        mode=policy.mode,
        predicted_startup_ms=profile.startup_ms_p50,
        price_per_hour_usd=profile.price_per_hour_usd,
        scores=scores,
        excluded={p: "; ".join(e.reason for e in ex) for p, ex in excluded.items()},
        executable=sorted(n for n in scores if n in executable) if executable is not None else None,
    )
