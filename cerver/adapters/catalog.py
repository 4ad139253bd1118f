"""The provider catalog: what each provider *is*, as data (``profiles.json``).

One profile per provider: runtimes, capabilities, startup / exec / install latency
distributions, a reference price and availability. Every figure is dated and carries its
source and sample size; figures we guessed say so in ``estimated``. Whether a provider can
*execute* here (adapter + credentials) is a different question, answered by
``cerver.adapters.access.executable_providers``; the catalog only *advises*.

Latency figures are modelled as lognormal distributions fitted to p50 and p95
(``mu = ln p50``, ``sigma = ln(p95 / p50) / z95``); a missing p99 is filled from that fit
and marked estimated.

``effective_profiles`` merges recent measurements made here (canary runs, sessions) into
the published figures, so recommendations follow what was measured.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from cerver.errors import BadRequest

if TYPE_CHECKING:
    from cerver.store.observations import Observation

Z95 = 1.6448536269514722
Z99 = 2.3263478740408408
PersistenceLevel = Literal["low", "medium", "high"]
PERSISTENCE_RANK: dict[str, int] = {"low": 0, "medium": 1, "high": 2}
LATENCY_METRICS: tuple[str, ...] = ("startup_ms", "exec_ms", "install_ms")

# Measurements older than this are ignored; fewer than MIN_MEASURED keep the published figure.
DEFAULT_WINDOW_DAYS = 30
MIN_MEASURED = 5


class LatencyFigure(BaseModel):
    """A latency distribution in milliseconds, dated, with its source and sample size."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    p50_ms: float = Field(gt=0)
    p95_ms: float = Field(gt=0)
    p99_ms: float | None = None
    sample_size: int = Field(ge=0)
    as_of: date
    source: str
    estimated: tuple[str, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _fill_p99(cls, data: object) -> object:
        """A missing p99 comes from the lognormal fit to p50/p95 and is marked estimated."""
        if not isinstance(data, dict) or data.get("p99_ms") is not None:
            return data
        p50, p95 = float(data["p50_ms"]), float(data["p95_ms"])
        if p50 <= 0 or p95 < p50:
            raise ValueError(f"need 0 < p50_ms <= p95_ms, got p50={p50}, p95={p95}")
        sigma = math.log(p95 / p50) / Z95
        p99 = round(math.exp(math.log(p50) + Z99 * sigma), 1)
        estimated = (*tuple(data.get("estimated", ())), "p99_ms")
        return {**data, "p99_ms": p99, "estimated": estimated}

    @model_validator(mode="after")
    def _ordered(self) -> LatencyFigure:
        if not self.p50_ms <= self.p95_ms <= self.p99:
            raise ValueError("latency percentiles must satisfy p50_ms <= p95_ms <= p99_ms")
        return self

    @property
    def mu(self) -> float:
        return math.log(self.p50_ms)

    @property
    def sigma(self) -> float:
        return math.log(self.p95_ms / self.p50_ms) / Z95

    @property
    def p99(self) -> float:
        assert self.p99_ms is not None  # filled by the validator
        return self.p99_ms

    @property
    def measured(self) -> bool:
        return "p50_ms" not in self.estimated and self.sample_size > 0


class PriceFigure(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    per_hour_usd: float = Field(ge=0)
    as_of: date
    source: str
    estimated: bool = False


class AvailabilityFigure(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    uptime_percent: float = Field(gt=0, le=100)
    sample_size: int = Field(ge=0)
    as_of: date
    source: str
    estimated: bool = False


class Capabilities(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    public_preview: bool
    persistence_level: PersistenceLevel
    package_install: bool
    gpu: bool
    max_timeout_minutes: int = Field(gt=0)
    network_control: bool


class ProviderProfile(BaseModel):
    """What one provider is. Plain, frozen data; the adapter (if any) only acts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    description: str
    runtimes: tuple[str, ...]
    # What a session on this provider runs when neither it nor a run names a runtime.
    default_runtime: str = "shell"
    capabilities: Capabilities
    # feature -> why this provider lacks it (SkyPilot's _CLOUD_UNSUPPORTED_FEATURES).
    unsupported_reasons: dict[str, str] = Field(default_factory=dict)
    startup: LatencyFigure
    exec: LatencyFigure
    install: LatencyFigure
    price: PriceFigure
    availability: AvailabilityFigure

    @property
    def price_per_hour_usd(self) -> float:
        return self.price.per_hour_usd

    @property
    def startup_ms_p50(self) -> float:
        return self.startup.p50_ms

    @property
    def uptime_percent(self) -> float:
        return self.availability.uptime_percent

    @property
    def success_rate(self) -> float:
        return self.availability.uptime_percent / 100.0

    def latency(self, metric: str) -> LatencyFigure:
        """The figure for ``startup_ms`` / ``exec_ms`` / ``install_ms``."""
        if metric not in LATENCY_METRICS:
            raise BadRequest(
                f"unknown latency metric {metric!r}; valid: {', '.join(LATENCY_METRICS)}",
                details={"metric": metric, "valid": list(LATENCY_METRICS)},
            )
        figure: LatencyFigure = getattr(self, metric.removesuffix("_ms"))
        return figure

    def oldest_figure(self) -> date:
        return min(self.startup.as_of, self.price.as_of, self.availability.as_of)


class Catalog(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    reference_size: str
    providers: tuple[ProviderProfile, ...]


@cache
def _catalog() -> Catalog:
    text = resources.files("cerver.adapters").joinpath("profiles.json").read_text("utf-8")
    return Catalog.model_validate(json.loads(text))


def reference_size() -> str:
    return _catalog().reference_size


def all_profiles() -> list[ProviderProfile]:
    """Every published profile, in catalog order."""
    return list(_catalog().providers)


def names() -> list[str]:
    return sorted(p.name for p in _catalog().providers)


def get_profile(name: str) -> ProviderProfile:
    for profile in _catalog().providers:
        if profile.name == name:
            return profile
    raise BadRequest(
        f"unknown provider {name!r}; valid providers: {', '.join(names())}",
        details={"provider": name, "valid": names()},
    )


def check_names(requested: Iterable[str], profiles: Sequence[ProviderProfile]) -> None:
    """Raise ``BadRequest`` listing the valid names if any requested name is unknown."""
    valid = sorted(p.name for p in profiles)
    unknown = sorted(set(requested) - set(valid))
    if unknown:
        raise BadRequest(
            f"unknown provider(s) {', '.join(unknown)}; valid providers: {', '.join(valid)}",
            details={"unknown": unknown, "valid": valid},
        )


# --- learning from measurement -------------------------------------------------------


class ObservationSource(Protocol):
    def recent(
        self,
        provider: str | None = None,
        metric: str | None = None,
        *,
        since: float | None = None,
        limit: int = ...,
    ) -> list[Observation]: ...


def _day(ts: float) -> date:
    return datetime.fromtimestamp(ts, tz=UTC).date()


def _measured_figure(values: np.ndarray, last_ts: float, sources: set[str]) -> LatencyFigure:
    p50, p95, p99 = (float(v) for v in np.percentile(values, [50, 95, 99]))
    p50 = max(p50, 0.001)
    return LatencyFigure(
        p50_ms=round(p50, 3),
        p95_ms=round(max(p95, p50), 3),
        p99_ms=round(max(p99, p95, p50), 3),
        sample_size=int(values.size),
        as_of=_day(last_ts),
        source=f"measured here: {values.size} {'/'.join(sorted(sources))} samples",
        estimated=(),
    )


def merge_observations(
    profiles: Sequence[ProviderProfile],
    observations: Sequence[Observation],
    *,
    min_samples: int = MIN_MEASURED,
) -> list[ProviderProfile]:
    """Pure: replace a profile's latency figures (and availability) by what was measured,
    where at least ``min_samples`` measurements of that metric exist."""
    by_key: dict[tuple[str, str], list[Observation]] = {}
    for obs in observations:
        by_key.setdefault((obs.provider, obs.metric), []).append(obs)

    merged: list[ProviderProfile] = []
    for profile in profiles:
        update: dict[str, object] = {}
        all_runs: list[Observation] = []
        for metric in LATENCY_METRICS:
            rows = by_key.get((profile.name, metric), [])
            all_runs.extend(rows)
            ok_values = np.array([o.value for o in rows if o.ok], dtype=np.float64)
            if ok_values.size >= min_samples:
                last = max(o.ts for o in rows)
                update[metric.removesuffix("_ms")] = _measured_figure(
                    ok_values, last, {o.source for o in rows}
                )
        if len(all_runs) >= min_samples:
            ok = sum(1 for o in all_runs if o.ok)
            update["availability"] = AvailabilityFigure(
                uptime_percent=max(100.0 * ok / len(all_runs), 0.01),
                sample_size=len(all_runs),
                as_of=_day(max(o.ts for o in all_runs)),
                source=f"measured here: success rate of {len(all_runs)} operations",
                estimated=False,
            )
        merged.append(profile.model_copy(update=update) if update else profile)
    return merged


def effective_profiles(
    observations: ObservationSource | None = None,
    *,
    window_days: int = DEFAULT_WINDOW_DAYS,
    min_samples: int = MIN_MEASURED,
    now: datetime | None = None,
) -> list[ProviderProfile]:
    """The catalog with recent measurements (last ``window_days``) merged in."""
    profiles = all_profiles()
    if observations is None:
        return profiles
    moment = now or datetime.now(tz=UTC)
    since = (moment - timedelta(days=window_days)).timestamp()
    recent = observations.recent(since=since, limit=100_000)
    return merge_observations(profiles, recent, min_samples=min_samples)


__all__ = [
    "PERSISTENCE_RANK",
    "AvailabilityFigure",
    "Capabilities",
    "LatencyFigure",
    "PriceFigure",
    "ProviderProfile",
    "all_profiles",
    "check_names",
    "effective_profiles",
    "get_profile",
    "merge_observations",
    "names",
    "reference_size",
]
