"""Hard filters: the one central check that refuses a provider for a requirement or policy
limit, always with a reason (SkyPilot's ``_CLOUD_UNSUPPORTED_FEATURES`` style).

Capabilities are data on the profile; each requirement is one small check here, keyed by
the requirement's name. A provider's own ``unsupported_reasons`` text is preferred over the
generic one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cerver.adapters.catalog import PERSISTENCE_RANK, ProviderProfile
from cerver.gateway.models import Policy, Requirements

# Boolean features a request can ask for, with the words used in a generic reason.
BOOLEAN_FEATURES: dict[str, str] = {
    "public_preview": "public previews",
    "package_install": "package installs",
    "gpu": "GPUs",
    "network_control": "network control",
}


@dataclass(frozen=True)
class Exclusion:
    requirement: str
    reason: str


Check = Callable[[ProviderProfile, Requirements, Policy], "str | None"]


def _feature_check(feature: str) -> Check:
    def check(profile: ProviderProfile, req: Requirements, _policy: Policy) -> str | None:
        if not getattr(req, feature) or getattr(profile.capabilities, feature):
            return None
        generic = f"{profile.name} does not support {BOOLEAN_FEATURES[feature]}"
        return profile.unsupported_reasons.get(feature, generic)

    return check


def _runtime(profile: ProviderProfile, req: Requirements, _policy: Policy) -> str | None:
    if req.runtime is None or req.runtime in profile.runtimes:
        return None
    return f"runtime {req.runtime!r} not offered (has {', '.join(profile.runtimes)})"


def _persistence(profile: ProviderProfile, req: Requirements, _policy: Policy) -> str | None:
    wanted = req.persistence_level
    have = profile.capabilities.persistence_level
    if wanted is None or PERSISTENCE_RANK[have] >= PERSISTENCE_RANK[wanted]:
        return None
    return f"persistence {have!r} is below the required {wanted!r}"


def _timeout(profile: ProviderProfile, req: Requirements, _policy: Policy) -> str | None:
    limit = profile.capabilities.max_timeout_minutes
    if req.timeout_minutes is None or req.timeout_minutes <= limit:
        return None
    return f"timeout {req.timeout_minutes:g} min exceeds the {limit} min limit"


def _allowed(profile: ProviderProfile, _req: Requirements, policy: Policy) -> str | None:
    if policy.allowed_providers is None or profile.name in policy.allowed_providers:
        return None
    return "not in policy.allowed_providers"


def _blocked(profile: ProviderProfile, _req: Requirements, policy: Policy) -> str | None:
    return "in policy.blocked_providers" if profile.name in policy.blocked_providers else None


def _max_startup(profile: ProviderProfile, _req: Requirements, policy: Policy) -> str | None:
    limit = policy.max_startup_ms
    if limit is None or profile.startup_ms_p50 <= limit:
        return None
    return f"predicted startup p50 {profile.startup_ms_p50:g} ms exceeds max_startup_ms {limit:g}"


def _max_price(profile: ProviderProfile, _req: Requirements, policy: Policy) -> str | None:
    limit = policy.max_price_per_hour
    if limit is None or profile.price_per_hour_usd <= limit:
        return None
    return f"price ${profile.price_per_hour_usd:g}/h exceeds max_price_per_hour ${limit:g}/h"


# requirement name (as it appears in the request) -> check. Order is the report order.
CHECKS: dict[str, Check] = {
    "policy.allowed_providers": _allowed,
    "policy.blocked_providers": _blocked,
    "requirements.runtime": _runtime,
    **{f"requirements.{f}": _feature_check(f) for f in BOOLEAN_FEATURES},
    "requirements.persistence_level": _persistence,
    "requirements.timeout_minutes": _timeout,
    "policy.max_startup_ms": _max_startup,
    "policy.max_price_per_hour": _max_price,
}


def exclusions(
    profile: ProviderProfile, requirements: Requirements, policy: Policy
) -> list[Exclusion]:
    """Every requirement or policy limit this provider fails, with the reason."""
    found: list[Exclusion] = []
    for name, check in CHECKS.items():
        reason = check(profile, requirements, policy)
        if reason is not None:
            found.append(Exclusion(name, reason))
    return found


def unsupported(profile: ProviderProfile, requirements: Requirements) -> list[Exclusion]:
    """Only the capability requirements (no policy limits): used by stress tests too."""
    return exclusions(profile, requirements, Policy())
