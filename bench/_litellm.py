"""The LiteLLM proxy for the side-by-side bench, kept out of the project's venv (it pins
many packages): it lives in its own venv, ``.venv-bench-litellm`` at the repository's root
(gitignored), created here on first use, and runs as a subprocess of the bench.

    python bench/_litellm.py      # create the venv now (what `make bench` does first)
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv-bench-litellm"
STAMP = VENV / ".installed"
LOG = VENV.with_name(".venv-bench-litellm.log")
REQUIREMENT = "litellm[proxy]"
START_TIMEOUT_S = 180.0


def ensure_venv() -> str | None:
    """None once the venv is ready, else why it could not be made (the pip log's tail)."""
    if STAMP.exists():
        return None
    base = getattr(sys, "_base_executable", None) or sys.executable
    steps = [
        [base, "-m", "venv", str(VENV)],
        [str(VENV / "bin" / "pip"), "install", "-q", REQUIREMENT],
    ]
    with LOG.open("w") as log:
        for argv in steps:
            print(f"litellm venv: {' '.join(argv)} (log: {LOG})", file=sys.stderr, flush=True)
            try:
                done = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, timeout=1800)
            except (OSError, subprocess.SubprocessError) as exc:
                return f"{' '.join(argv[:3])} failed: {exc}"
            if done.returncode != 0:
                tail = LOG.read_text().strip().splitlines()[-3:]
                return f"{' '.join(argv[:3])} exited {done.returncode}: {' | '.join(tail)}"
    STAMP.touch()
    return None


class LiteLLMProxy:
    """``litellm --config`` routing model ``model`` to an OpenAI-shaped ``upstream``
    (``.../v1``), with a master key (the client authenticates, as with Cerver)."""

    def __init__(self, port: int, model: str, upstream: str, api_key: str, master_key: str):
        self.url = f"http://127.0.0.1:{port}"
        self.dir = Path(tempfile.mkdtemp(prefix="cerver-bench-litellm-"))
        config = self.dir / "config.yaml"
        config.write_text(
            "model_list:\n"
            f"  - model_name: {model}\n"
            "    litellm_params:\n"
            f"      model: openai/{model}\n"
            f"      api_base: {upstream}\n"
            f"      api_key: {api_key}\n"
            "general_settings:\n"
            f"  master_key: {master_key}\n"
        )
        env = dict(os.environ)
        env.update(LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_LOG="ERROR")
        self.log = (self.dir / "proxy.log").open("w")
        self.proc = subprocess.Popen(
            [str(VENV / "bin" / "litellm"), "--config", str(config),
             "--host", "127.0.0.1", "--port", str(port)],
            stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=self.dir,
        )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                httpx.get(f"{self.url}/health/liveliness", timeout=2).raise_for_status()
                return
            except httpx.HTTPError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    tail = (self.dir / "proxy.log").read_text().strip().splitlines()[-5:]
                    raise RuntimeError(
                        "the LiteLLM proxy did not start: " + " | ".join(tail)
                    ) from None
                time.sleep(0.5)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


if __name__ == "__main__":
    reason = ensure_venv()
    print(reason or f"ready: {VENV}")
    raise SystemExit(1 if reason else 0)
