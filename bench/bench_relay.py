"""What the relay adds per run, against `local` on the same machine.

Starts a real Cerver in-process (Ray + Serve + SQLite), a real `cerver relay` process on this
machine (logged in through the API), one session on `local` and one on the relay, and times
N sequential runs of each over HTTP on loopback (client-observed latency). The relay path
adds: session host -> RelayHub actor -> the replica holding the socket -> WebSocket ->
the relay's own local sandbox, and back. Prints a table; writes bench/results/relay.json.

    python bench/bench_relay.py            # N=100 per case
    python bench/bench_relay.py --quick    # N=20, a smoke check
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _server import running_server

RESULTS = Path(__file__).resolve().parent / "results" / "relay.json"
CASES = [("shell", "true"), ("python", "pass")]


def pct(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=float)
    return {f"p{q}": round(float(np.percentile(arr, q)), 3) for q in (50, 95, 99)} | {
        "n": int(arr.size)
    }


def start_relay(url: str, token: str) -> subprocess.Popen[str]:
    home = tempfile.mkdtemp(prefix="cerver-bench-relay-", dir="/tmp")
    os.chmod(home, 0o711)
    env = dict(os.environ, CERVER_RELAY_HOME=home, CERVER_SANDBOX_UID_BASE="330000")
    cerver = str(Path(sys.executable).with_name("cerver"))
    proc = subprocess.Popen(
        [cerver, "relay", "--gateway", url, "--no-browser"], env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout or []], daemon=True).start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = lines.get(timeout=60)
        if line.startswith("User code: "):
            code = line.split(": ", 1)[1].strip()
            answer = httpx.post(
                f"{url}/v2/relay/approve", json={"code": code},
                headers={"Authorization": f"Bearer {token}"},
            )  # fmt: skip
            answer.raise_for_status()
        if line.startswith("Connected as compute"):
            return proc
    raise RuntimeError("the relay did not connect")


def measure(api: httpx.Client, compute: dict[str, Any], n: int) -> dict[str, Any]:
    sid = api.post("/v2/sessions", json={"compute": compute}).json()["session_id"]
    out: dict[str, Any] = {}
    for language, code in CASES:
        body = {"code": code, "language": language}
        api.post(f"/v2/sessions/{sid}/run", json=body).raise_for_status()  # warm
        samples = []
        for _ in range(n):
            started = time.perf_counter()
            api.post(f"/v2/sessions/{sid}/run", json=body).raise_for_status()
            samples.append((time.perf_counter() - started) * 1000.0)
        out[language] = pct(samples)
    api.delete(f"/v2/sessions/{sid}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    n = 20 if parser.parse_args().quick else 100
    with running_server(session_pool_size=1) as (url, token, _settings):
        relay = start_relay(url, token)
        try:
            with httpx.Client(
                base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60
            ) as api:
                local = measure(api, {"provider": "local"}, n)
                via_relay = measure(api, {"provider": "relay"}, n)
        finally:
            os.killpg(relay.pid, signal.SIGTERM)
            relay.wait(timeout=30)
    added = {
        lang: {
            "added_p50_ms": round(via_relay[lang]["p50"] - local[lang]["p50"], 3),
            "added_p95_ms": round(via_relay[lang]["p95"] - local[lang]["p95"], 3),
            "ratio_p50": round(via_relay[lang]["p50"] / local[lang]["p50"], 3),
        }
        for lang, _ in CASES
    }
    result = {
        "what": "client-observed run latency over HTTP on loopback, sequential, ms",
        "n_per_case": n,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, shared and loaded",
        "local": local,
        "relay": via_relay,
        "relay_added": added,
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    for lang, _ in CASES:
        loc, rel, add = local[lang]["p50"], via_relay[lang]["p50"], added[lang]
        print(f"{lang:7} local p50 {loc:8.2f}  relay p50 {rel:8.2f}  "
              f"added {add['added_p50_ms']:7.2f} ms  x{add['ratio_p50']}")  # fmt: skip


if __name__ == "__main__":
    main()
