"""Monte Carlo simulation of a stress-test kind from provider profiles.

``draw_runs`` is pure numpy and vectorised: one lognormal draw per step (per concurrent
sandbox in a burst) and run, float32. ``simulate_tasks`` chunks the draws into parallel Ray
tasks; ``draw_runs_python`` is the same draws in a plain Python loop (the bench baseline).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
import ray

from cerver.adapters.catalog import ProviderProfile
from cerver.stress.kinds import Kind
from cerver.stress.sample import RunSamples

DEFAULT_CHUNK = 250_000


@dataclass(frozen=True)
class SimParams:
    """What one provider's simulation needs, nothing more (cheap to ship to a task)."""

    provider: str
    steps: tuple[tuple[float, float], ...]  # (mu, sigma) of ln(ms) per step
    concurrency: int
    success_per_op: float

    @classmethod
    def of(cls, profile: ProviderProfile, kind: Kind) -> SimParams:
        figures = [profile.latency(step) for step in kind.steps]
        return cls(
            provider=profile.name,
            steps=tuple((f.mu, f.sigma) for f in figures),
            concurrency=kind.concurrency,
            success_per_op=profile.success_rate,
        )

    @property
    def success_per_run(self) -> float:
        return float(self.success_per_op ** (len(self.steps) * self.concurrency))

    @property
    def draws_per_run(self) -> int:
        return len(self.steps) * self.concurrency


def draw_runs(params: SimParams, n: int, seed: np.random.SeedSequence | int) -> RunSamples:
    """Simulate ``n`` runs: latency = sum over steps (max over a burst's sandboxes)."""
    rng = np.random.default_rng(seed)
    latency = np.zeros(n, dtype=np.float32)
    for mu, sigma in params.steps:
        z = rng.standard_normal((n, params.concurrency), dtype=np.float32)
        z *= np.float32(sigma)
        z += np.float32(mu)
        np.exp(z, out=z)
        latency += z.max(axis=1) if params.concurrency > 1 else z[:, 0]
    ok = rng.random(n, dtype=np.float32) < np.float32(params.success_per_run)
    return RunSamples(
        provider=params.provider,
        ok_latency_ms=latency[ok],
        runs=n,
        total_ms=float(latency.sum(dtype=np.float64)),
    )


def draw_runs_python(params: SimParams, n: int, seed: int) -> RunSamples:
    """The same model in plain Python, one draw at a time (bench baseline only)."""
    rng = random.Random(seed)
    p_ok = params.success_per_run
    ok_values: list[float] = []
    total = 0.0
    for _ in range(n):
        latency = 0.0
        for mu, sigma in params.steps:
            latency += max(math.exp(rng.gauss(mu, sigma)) for _ in range(params.concurrency))
        total += latency
        if rng.random() < p_ok:
            ok_values.append(latency)
    return RunSamples(params.provider, np.array(ok_values, dtype=np.float32), n, total)


@ray.remote(num_cpus=1)
def draw_runs_task(params: SimParams, n: int, seed: np.random.SeedSequence) -> RunSamples:
    return draw_runs(params, n, seed)


def chunk_sizes(n: int, chunk: int) -> list[int]:
    full, rest = divmod(n, chunk)
    return [chunk] * full + ([rest] if rest else [])


def simulate_tasks(
    plan: list[SimParams], n: int, *, seed: int | None = None, chunk: int = DEFAULT_CHUNK
) -> list[ray.ObjectRef]:
    """Submit one Ray task per (provider, chunk); each returns a ``RunSamples``."""
    root = np.random.SeedSequence(seed)
    sizes = chunk_sizes(n, max(1, chunk))
    children = iter(root.spawn(len(plan) * len(sizes)))
    return [draw_runs_task.remote(p, size, next(children)) for p in plan for size in sizes]
