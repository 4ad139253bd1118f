"""Plan and run a stress test: validate kind / providers / requirements, fan out the
simulation or the canary as Ray tasks, aggregate, record canary measurements.

    plan_stress(request, profiles) -> StressPlan         (pure)
    await execute(plan, ...) -> StressResult              (Ray tasks; progress callback)
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import ray

from cerver.adapters.base import LANGUAGES, Language
from cerver.adapters.catalog import ProviderProfile, check_names
from cerver.config import Settings
from cerver.errors import BadRequest, NoProviderFits
from cerver.gateway.filters import unsupported
from cerver.store.ids import new_id, now
from cerver.store.observations import Observation
from cerver.stress import aggregate
from cerver.stress.canary import (
    DEFAULT_CONCURRENCY,
    CanaryPlan,
    CanarySample,
    canary_task,
    to_run_samples,
)
from cerver.stress.kinds import Kind, get_kind
from cerver.stress.models import StressRequest, StressResult
from cerver.stress.sample import RunSamples, merge
from cerver.stress.simulate import SimParams, simulate_tasks

ProgressFn = Callable[[float], None]

# Above this much work (runs x providers) the POST answers at once and the job is polled.
SYNC_SIMULATE_RUNS = 200_000
SYNC_CANARY_RUNS = 10
# Simulation chunks: at least this many runs, and about this many chunks per provider.
MIN_CHUNK = 10_000
CHUNKS_PER_PROVIDER = 8


@dataclass(frozen=True)
class StressPlan:
    request: StressRequest
    kind: Kind
    profiles: tuple[ProviderProfile, ...]
    excluded: dict[str, str] = field(default_factory=dict)

    @property
    def runs(self) -> int:
        return self.request.sample_size * len(self.profiles)

    @property
    def is_async(self) -> bool:
        limit = SYNC_SIMULATE_RUNS if self.request.mode == "simulate" else SYNC_CANARY_RUNS
        return self.request.run_async or self.runs > limit


def plan_stress(request: StressRequest, profiles: Sequence[ProviderProfile]) -> StressPlan:
    kind = get_kind(request.kind)
    names = request.providers or [p.name for p in profiles]
    check_names(names, profiles)
    runtime = request.requirements.runtime
    if request.mode == "canary" and runtime is not None and runtime not in LANGUAGES:
        raise BadRequest(
            f"canary runtime {runtime!r} unsupported; valid runtimes: {', '.join(LANGUAGES)}",
            details={"runtime": runtime, "valid": list(LANGUAGES)},
        )
    by_name = {p.name: p for p in profiles}
    run: list[ProviderProfile] = []
    excluded: dict[str, str] = {}
    for name in dict.fromkeys(names):
        found = unsupported(by_name[name], request.requirements)
        if found:
            excluded[name] = "; ".join(e.reason for e in found)
        else:
            run.append(by_name[name])
    if not run:
        raise NoProviderFits(
            "no requested provider meets the requirements",
            details={"excluded": excluded},
        )
    return StressPlan(request, kind, tuple(run), excluded)


def skeleton(plan: StressPlan, *, status: str = "running") -> StressResult:
    job_id = new_id("stj")
    return StressResult(
        id=job_id,
        status=cast(Any, status),
        progress=0.0,
        mode=plan.request.mode,
        kind=plan.kind.name,
        task=plan.request.task,
        workload=plan.request.workload,
        sample_size=plan.request.sample_size,
        providers=[p.name for p in plan.profiles],
        poll_url=f"/gateway/stress-tests/{job_id}",
        excluded=plan.excluded,
        created_at=now(),
    )


async def run_simulation(plan: StressPlan, on_progress: ProgressFn) -> dict[str, RunSamples]:
    n = plan.request.sample_size
    chunk = max(MIN_CHUNK, math.ceil(n / CHUNKS_PER_PROVIDER))
    params = [SimParams.of(p, plan.kind) for p in plan.profiles]
    refs = simulate_tasks(params, n, seed=plan.request.seed, chunk=chunk)
    return await _gather_samples(refs, on_progress)


async def _gather_samples(
    refs: list[ray.ObjectRef], on_progress: ProgressFn
) -> dict[str, RunSamples]:
    parts: dict[str, list[RunSamples]] = {}
    pending = list(refs)
    done = 0
    while pending:
        ready, pending = await asyncio.to_thread(ray.wait, pending, num_returns=1, timeout=None)
        for part in ray.get(ready):
            parts.setdefault(part.provider, []).append(part)
            done += 1
        on_progress(done / len(refs))
    return {name: merge(chunks) for name, chunks in parts.items()}


async def run_canary(
    plan: StressPlan,
    settings: Settings,
    credentials: dict[str, dict[str, str]],
    account_id: str,
    on_progress: ProgressFn,
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> tuple[dict[str, RunSamples], list[CanarySample]]:
    runtime = cast(Language, plan.request.requirements.runtime or "shell")
    install = bool(plan.request.requirements.package_install)
    plans = [
        CanaryPlan(p.name, plan.kind, runtime, account_id, install)
        for p in plan.profiles
        for _ in range(plan.request.sample_size)
    ]
    gate = asyncio.Semaphore(concurrency)
    done = 0

    async def one(cp: CanaryPlan) -> CanarySample:
        nonlocal done
        async with gate:
            ref = canary_task.remote(settings, credentials.get(cp.provider, {}), cp)
            sample: CanarySample = await ref
        done += 1
        on_progress(done / len(plans))
        return sample

    samples = list(await asyncio.gather(*(one(cp) for cp in plans)))
    by_provider = {
        p.name: to_run_samples(p.name, [s for s in samples if s.provider == p.name])
        for p in plan.profiles
    }
    return by_provider, samples


def observations_of(samples: Sequence[CanarySample], ts: float | None = None) -> list[Observation]:
    """One observation per measured step of each canary sample (failed ones with ok=False)."""
    moment = now() if ts is None else ts
    return [
        Observation(
            provider=s.provider, metric=metric, value=ms, ok=s.ok, source="canary", ts=moment
        )
        for s in samples
        for metric, ms in s.steps_ms.items()
    ]


def finish(result: StressResult, plan: StressPlan, samples: dict[str, RunSamples]) -> StressResult:
    prices = {p.name: p.price_per_hour_usd for p in plan.profiles}
    reports = {name: aggregate.report(s, plan.kind, prices[name]) for name, s in samples.items()}
    ranking = aggregate.rank(reports)
    notes = [
        f"{plan.request.mode}: {plan.kind.description}; score ceiling {plan.kind.ceiling_ms:g} ms",
        "percentiles over successful runs after trimming 5% at each end",
    ]
    if plan.request.mode == "simulate":
        notes.append("simulated from catalog profiles (lognormal fit to p50/p95); not measured")
    return result.model_copy(
        update={
            "status": "completed",
            "progress": 1.0,
            "results": reports,
            "ranking": ranking,
            "recommendation": aggregate.implied_recommendation(reports, ranking),
            "notes": notes,
            "finished_at": now(),
        }
    )


def recorder_for(settings: Settings) -> Callable[[list[Observation]], object]:
    """Where canary measurements go: the observations table of this deployment's store."""
    from cerver.store import Store

    return Store.open(settings.database_url).observations.record_many


async def execute(
    plan: StressPlan,
    result: StressResult,
    on_progress: ProgressFn,
    *,
    settings: Settings | None = None,
    credentials: dict[str, dict[str, str]] | None = None,
    account_id: str | None = None,
    record: Callable[[list[Observation]], object] | None = None,
) -> StressResult:
    """Run the plan and return ``result`` completed. ``record`` (sync, run in a thread)
    receives the canary measurements for the observations store."""
    if plan.request.mode == "simulate":
        samples = await run_simulation(plan, on_progress)
        return finish(result, plan, samples)
    if settings is None or account_id is None:
        raise BadRequest("a canary needs the server settings and an account")
    samples, raw = await run_canary(plan, settings, credentials or {}, account_id, on_progress)
    if record is not None:
        await asyncio.to_thread(record, observations_of(raw))
    return finish(result, plan, samples)
