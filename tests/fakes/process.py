"""Start a fake provider server as a subprocess and wait for its announced URL."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def start_fake(name: str, port: int = 0, *args: str) -> Iterator[str]:
    """Run ``python -m tests.fakes.<name> --port <port> ...``; yield the URL it prints."""
    proc = subprocess.Popen(
        [sys.executable, "-m", f"tests.fakes.{name}", "--port", str(port), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if "=" not in line:
            raise RuntimeError(f"fake {name} did not start (printed {line!r})")
        url = line.split("=", 1)[1].split()[0]
        for _ in range(200):  # bound before it listens: wait until it answers
            try:
                httpx.get(f"{url}/", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
