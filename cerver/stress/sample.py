"""Samples of runs, the unit both simulation chunks and canary runs produce."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class RunSamples:
    """Runs of one provider: latencies of the successful ones, counts, and the total time
    of all runs (failed runs cost time too)."""

    provider: str
    ok_latency_ms: np.ndarray  # float32 or float64, one entry per successful run
    runs: int
    total_ms: float
    errors: list[str] = field(default_factory=list)

    @property
    def successes(self) -> int:
        return int(self.ok_latency_ms.size)


def merge(parts: list[RunSamples]) -> RunSamples:
    if not parts:
        raise ValueError("merge needs at least one RunSamples")
    return RunSamples(
        provider=parts[0].provider,
        ok_latency_ms=np.concatenate([p.ok_latency_ms for p in parts]),
        runs=sum(p.runs for p in parts),
        total_ms=float(sum(p.total_ms for p in parts)),
        errors=[e for p in parts for e in p.errors],
    )
