"""Live canary runs: the kind's steps executed for real through the adapters, one Ray task
per sample, at most ``concurrency`` at once. Every sandbox a sample creates is deleted
(try/finally); a failed step makes the sample a failure, never an exception."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import numpy as np
import ray

from cerver.adapters import registry
from cerver.adapters.base import (
    ComputeAdapter,
    ExecRequest,
    InstallRequest,
    Language,
    SandboxRecord,
    SandboxSpec,
)
from cerver.config import Settings
from cerver.errors import CerverError
from cerver.stress.kinds import Kind
from cerver.stress.sample import RunSamples

log = logging.getLogger("cerver.stress")

DEFAULT_CONCURRENCY = 4
STEP_TIMEOUT_S = 120.0
# What a canary runs per runtime: something every sandbox of that runtime can do.
CANARY_CODE: dict[str, str] = {
    "shell": "echo cerver-canary",
    "python": "print('cerver-canary')",
    "node": "console.log('cerver-canary')",
}
CANARY_PACKAGE: dict[str, InstallRequest] = {
    "shell": InstallRequest(package="six", manager="pip", timeout_s=STEP_TIMEOUT_S),
    "python": InstallRequest(package="six", manager="pip", timeout_s=STEP_TIMEOUT_S),
    "node": InstallRequest(package="left-pad", manager="npm", timeout_s=STEP_TIMEOUT_S),
}


@dataclass
class CanarySample:
    provider: str
    ok: bool
    latency_ms: float  # the run as the kind defines it
    steps_ms: dict[str, float] = field(default_factory=dict)  # metric -> ms, for observations
    error: str | None = None


@dataclass(frozen=True)
class CanaryPlan:
    provider: str
    kind: Kind
    runtime: Language
    account_id: str
    install: bool  # run the install step (only when the request asks for package_install)


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


async def _create(adapter: ComputeAdapter, plan: CanaryPlan, made: list[SandboxRecord]) -> float:
    start = time.perf_counter()
    spec = SandboxSpec(account_id=plan.account_id, runtime=plan.runtime, network=plan.install)
    made.append(await asyncio.wait_for(adapter.create_sandbox(spec), STEP_TIMEOUT_S))
    return _ms(start)


async def _steps(
    adapter: ComputeAdapter, plan: CanaryPlan, made: list[SandboxRecord]
) -> CanarySample:
    sample = CanarySample(plan.provider, ok=False, latency_ms=0.0)
    steps = plan.kind.steps
    if "startup_ms" in steps:
        creates = [_create(adapter, plan, made) for _ in range(plan.kind.concurrency)]
        times = await asyncio.gather(*creates)
        sample.steps_ms["startup_ms"] = max(times)
    else:  # the sandbox is a precondition of the kind, not part of the timed run
        sample.steps_ms["startup_ms"] = await _create(adapter, plan, made)
    record = made[0]
    if "install_ms" in steps and plan.install:
        start = time.perf_counter()
        installed = await adapter.install_package(record, CANARY_PACKAGE[plan.runtime])
        sample.steps_ms["install_ms"] = _ms(start)
        if not installed.success:
            sample.error = f"install failed: {installed.output[-200:]}"
            return sample
    if "exec_ms" in steps:
        start = time.perf_counter()
        request = ExecRequest(
            code=CANARY_CODE[plan.runtime], language=plan.runtime, timeout_s=STEP_TIMEOUT_S
        )
        result = await adapter.run(record, request)
        sample.steps_ms["exec_ms"] = _ms(start)
        if result.exit_code != 0 or result.timed_out:
            sample.error = f"exec failed: exit {result.exit_code}: {result.stderr[-200:]}"
            return sample
    sample.ok = True
    return sample


async def run_sample(
    settings: Settings, credentials: dict[str, str], plan: CanaryPlan
) -> CanarySample:
    adapter = registry.get(plan.provider)(settings, credentials)
    made: list[SandboxRecord] = []
    start = time.perf_counter()
    try:
        sample = await _steps(adapter, plan, made)
    except Exception as exc:  # a failed sandbox is a failed sample, reported, not raised
        sample = CanarySample(plan.provider, ok=False, latency_ms=0.0)
        sample.error = _describe(exc)
    finally:
        cleanup_errors = await _delete_all(adapter, made)
        await adapter.close()
    timed = [ms for metric, ms in sample.steps_ms.items() if metric in plan.kind.steps]
    sample.latency_ms = sum(timed) if timed else _ms(start)
    if cleanup_errors:
        sample.error = "; ".join(filter(None, [sample.error, *cleanup_errors]))
    return sample


async def _delete_all(adapter: ComputeAdapter, made: list[SandboxRecord]) -> list[str]:
    results = await asyncio.gather(
        *(adapter.delete_sandbox(r) for r in made), return_exceptions=True
    )
    return [f"delete failed: {_describe(r)}" for r in results if isinstance(r, BaseException)]


def _describe(exc: BaseException) -> str:
    """A sample's error as its owner sees it: our own errors' (scrubbed) message, else the
    exception's type only; the server log has the rest."""
    if isinstance(exc, CerverError):
        return f"{exc.code}: {exc.to_body()['error']['message']}"
    log.warning("canary sample failed", exc_info=exc)
    return f"{type(exc).__name__} (the server log has the details)"


@ray.remote(num_cpus=0.25)
def canary_task(settings: Settings, credentials: dict[str, str], plan: CanaryPlan) -> CanarySample:
    return asyncio.run(run_sample(settings, credentials, plan))


def to_run_samples(provider: str, samples: list[CanarySample]) -> RunSamples:
    ok = np.array([s.latency_ms for s in samples if s.ok], dtype=np.float64)
    return RunSamples(
        provider=provider,
        ok_latency_ms=ok,
        runs=len(samples),
        total_ms=float(sum(s.latency_ms for s in samples)),
        errors=[s.error for s in samples if s.error],
    )
