"""Stress-test kinds, as data: which measured steps one run is made of, how many run at
once, and the latency ceiling that scores 0."""

from __future__ import annotations

from dataclasses import dataclass

from cerver.errors import BadRequest


@dataclass(frozen=True)
class Kind:
    name: str
    description: str
    steps: tuple[str, ...]  # catalog latency metrics, run one after another
    concurrency: int = 1  # sandboxes created at once per run (burst); the run waits for all
    ceiling_ms: float = 10_000.0  # a median/p95/p99 at or above this scores 0


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind(
            "preview_launch",
            "provision a sandbox, install packages, start the app",
            ("startup_ms", "install_ms", "exec_ms"),
            ceiling_ms=60_000.0,
        ),
        Kind("code_exec", "run code in a ready sandbox", ("exec_ms",), ceiling_ms=5_000.0),
        Kind(
            "burst",
            "create 10 sandboxes at once; the run ends when the last is ready",
            ("startup_ms",),
            concurrency=10,
            ceiling_ms=10_000.0,
        ),
    )
}


def get_kind(name: str) -> Kind:
    try:
        return KINDS[name]
    except KeyError:
        raise BadRequest(
            f"unknown stress-test kind {name!r}; valid kinds: {', '.join(sorted(KINDS))}",
            details={"kind": name, "valid": sorted(KINDS)},
        ) from None
