"""What run-llm adds on top of the model call: the same turn against a zero-latency fake
OpenAI (tests/fakes/openai.py, its own process), once through Cerver
(``POST /v2/sessions/:id/run-llm``: auth, transcript read, budget reserve/settle, two
transcript appends, the SDK call) and once with the official SDK straight at the fake.

    python bench/bench_llm.py [--turns 50]

Prints percentiles and the overhead (Cerver minus direct, per turn, p50 and p95), and
writes bench/results/llm.json. Turns go to fresh sessions every 10 turns, so the
conversation (and the request) stays small and comparable with the direct call.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._server import free_port, running_server  # noqa: E402
from bench.bench_sessions import pct  # noqa: E402
from tests.fakes.llm_process import FakeServer  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "llm.json"
KEY = "sk-bench"


async def direct(url: str, turns: int) -> list[float]:
    import openai

    client = openai.AsyncOpenAI(api_key=KEY, base_url=f"{url}/v1", max_retries=0)
    out = []
    for _ in range(turns):
        started = time.perf_counter()
        await client.responses.create(
            model="gpt-5", input=[{"role": "user", "content": "hi"}], store=False
        )
        out.append((time.perf_counter() - started) * 1000.0)
    await client.close()
    return out


def through_cerver(base: str, token: str, turns: int) -> tuple[list[float], list[float]]:
    client_ms, server_ms = [], []
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as api:
        sid = ""
        for i in range(turns + 3):
            if i % 10 == 0:
                r = api.post("/v2/sessions", json={"compute": None, "harness": "openai"})
                sid = r.json()["session_id"]
            started = time.perf_counter()
            r = api.post(f"/v2/sessions/{sid}/run-llm", json={"model": "gpt-5", "input": "hi"})
            took = (time.perf_counter() - started) * 1000.0
            r.raise_for_status()
            if i >= 3:  # the first turns warm the SDK client and the price table
                client_ms.append(took)
                server_ms.append(float(r.json()["latency_ms"]))
    return client_ms, server_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--turns", type=int, default=50)
    args = parser.parse_args()
    fake = FakeServer("tests.fakes.openai", free_port())
    try:
        base_direct = asyncio.run(direct(fake.url, args.turns + 3))[3:]
        with running_server(
            env={"OPENAI_API_KEY": KEY}, llm_base_urls={"openai": f"{fake.url}/v1"}
        ) as (base, token, _settings):
            client_ms, server_ms = through_cerver(base, token, args.turns)
    finally:
        fake.stop()
    d, c = pct(base_direct), pct(client_ms)
    result = {
        "what": "run-llm overhead vs the SDK straight at a zero-latency fake (same machine)",
        "turns": args.turns,
        "direct_sdk_ms": d,
        "run_llm_client_ms": c,
        "run_llm_server_latency_ms": pct(server_ms),
        "overhead_ms": {"p50": round(c["p50"] - d["p50"], 2), "p95": round(c["p95"] - d["p95"], 2)},
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
