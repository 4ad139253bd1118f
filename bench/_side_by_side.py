"""What the provider benches share: Cerver's adapter and the provider's SDK timed side by
side on the same fake, summed up per operation and written as one JSON report."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from bench_local_adapter import summary  # bench/ is the script's directory


def compare(samples: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, Any]]:
    """Per operation: both sides' percentiles, Cerver's p50 overhead and the p50 ratio."""
    report: dict[str, dict[str, Any]] = {}
    for op, sides in samples.items():
        cerver, sdk = summary(sides["cerver"]), summary(sides["sdk"])
        report[op] = {
            "cerver": cerver,
            "sdk": sdk,
            "overhead_p50_ms": cerver["p50_ms"] - sdk["p50_ms"],
            "ratio_p50": cerver["p50_ms"] / sdk["p50_ms"],
        }
    return report


def write_report(
    path: Path, how: str, ops: dict[str, dict[str, Any]], load_before: tuple[float, ...]
) -> None:
    """Print one line per operation and write the JSON report (date, machine, load)."""
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_avg_before": load_before,
            "load_avg_after": os.getloadavg(),
        },
        "how": how,
        "operations": ops,
    }
    for op, row in ops.items():
        c, s = row["cerver"], row["sdk"]
        print(
            f"{op:12s} cerver p50 {c['p50_ms']:7.2f} p95 {c['p95_ms']:7.2f} | "
            f"sdk p50 {s['p50_ms']:7.2f} p95 {s['p95_ms']:7.2f} | "
            f"+{row['overhead_p50_ms']:.2f} ms (x{row['ratio_p50']:.2f}) n={c['n']}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=float) + "\n")
    print(f"wrote {path}", file=sys.stderr)


def main_against_fake(
    fake: str,
    bench: Callable[[str, int], Coroutine[Any, Any, dict[str, dict[str, Any]]]],
    results: Path,
    how: str,
    description: str,
) -> None:
    """``--n N``: run ``bench(url, n)`` against ``python -m tests.fakes.<fake>``, report."""
    from tests.fakes.process import start_fake

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--n", type=int, default=30)
    args = parser.parse_args()
    load_before = os.getloadavg()
    with start_fake(fake) as url:
        ops = asyncio.run(bench(url, args.n))
    write_report(results, how, ops, load_before)
