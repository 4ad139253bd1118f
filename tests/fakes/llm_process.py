"""Run a fake model server (tests/fakes/openai.py, tests/fakes/anthropic.py) as its own
process on a free loopback port, and talk to its control endpoints."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]


class FakeServer:
    def __init__(self, module: str, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, "--port", str(port)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{self.url}/_fake/received", timeout=1).raise_for_status()
                return
            except httpx.HTTPError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                    self.stop()
                    raise RuntimeError(f"fake {module} did not start: {err}") from None
                time.sleep(0.1)

    def script(self, *items: dict[str, Any]) -> None:
        httpx.post(f"{self.url}/_fake/script", json={"items": list(items)}).raise_for_status()

    def reset(self) -> None:
        httpx.post(f"{self.url}/_fake/reset").raise_for_status()

    def received(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = httpx.get(f"{self.url}/_fake/received").json()
        return found

    def max_in_flight(self) -> int:
        return int(httpx.get(f"{self.url}/_fake/stats").json()["max_in_flight"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
