"""Hand-made provider profiles with round numbers, for hand-computed expectations."""

from __future__ import annotations

from datetime import date

from cerver.adapters.catalog import (
    AvailabilityFigure,
    Capabilities,
    LatencyFigure,
    PriceFigure,
    ProviderProfile,
)

TODAY = date(2026, 11, 28)


def figure(p50: float, p95: float, p99: float, n: int = 100, as_of: date = TODAY) -> LatencyFigure:
    return LatencyFigure(
        p50_ms=p50, p95_ms=p95, p99_ms=p99, sample_size=n, as_of=as_of, source="test"
    )


def make_profile(
    name: str,
    *,
    price: float,
    startup: tuple[float, float, float],
    uptime: float = 99.9,
    n: int = 100,
    as_of: date = TODAY,
    price_estimated: bool = False,
    public_preview: bool = True,
    persistence: str = "medium",
    gpu: bool = False,
    max_timeout: int = 60,
    runtimes: tuple[str, ...] = ("shell", "python", "node"),
    unsupported_reasons: dict[str, str] | None = None,
) -> ProviderProfile:
    return ProviderProfile(
        name=name,
        description="test profile",
        runtimes=runtimes,
        capabilities=Capabilities(
            public_preview=public_preview,
            persistence_level=persistence,  # type: ignore[arg-type]
            package_install=True,
            gpu=gpu,
            max_timeout_minutes=max_timeout,
            network_control=True,
        ),
        unsupported_reasons=unsupported_reasons or {},
        startup=figure(*startup, n=n, as_of=as_of),
        exec=figure(10, 20, 30, n=0, as_of=as_of),
        install=figure(1000, 2000, 3000, n=0, as_of=as_of),
        price=PriceFigure(
            per_hour_usd=price, as_of=as_of, source="test", estimated=price_estimated
        ),
        availability=AvailabilityFigure(
            uptime_percent=uptime, sample_size=0, as_of=as_of, source="test", estimated=True
        ),
    )


# A: fast, dear, reliable. B: slow, cheap, less reliable.
A = make_profile("alpha", price=0.10, startup=(100, 200, 300), uptime=99.9)
B = make_profile("beta", price=0.05, startup=(400, 800, 1000), uptime=99.0)
