"""The dashboard's sessions page with 1,000 sessions in the account (issue 15 target: server
time p50 under 100 ms). Server time is what the page reports in its `Server-Timing` header
(the route's own work: the store query and the template); client time adds Serve's proxy hop
and HTTP on loopback. Seeds the sessions straight into the store (transcript-only rows), signs
in like a browser, then reads the first page, a filtered page and a deep page.

    python bench/bench_dashboard.py [--sessions 1000] [--reads 200]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _server import running_server

from cerver.store import SessionRow, Store
from cerver.store.ids import new_id, now

RESULTS = Path(__file__).resolve().parent / "results" / "dashboard.json"
TARGET_P50_MS = 100.0


def seed(store: Store, account_id: str, count: int) -> None:
    at = now()
    for i in range(count):
        store.sessions.create(
            SessionRow(
                id=new_id("sess"),
                account_id=account_id,
                name=f"bench-{i:05d}-{'alpha' if i % 10 == 0 else 'beta'}",
                status="ready" if i % 3 else "closed",
                provider=None,
                compute_id=None,
                harness="openai",
                runtime="shell",
                created_at=at - (count - i),
                updated_at=at,
                closed_at=None,
                metrics={},
                routing=None,
            ),
            [("system", {"event": "created"})],
        )


def stats(samples: list[float]) -> dict[str, float]:
    p50, p95, p99 = np.percentile(np.array(samples), [50, 95, 99])
    return {"n": len(samples), "p50_ms": float(p50), "p95_ms": float(p95), "p99_ms": float(p99)}


def measure(client: httpx.Client, path: str, reads: int) -> dict[str, dict[str, float]]:
    server, total = [], []
    for _ in range(reads):
        started = time.perf_counter()
        r = client.get(path)
        total.append((time.perf_counter() - started) * 1000)
        r.raise_for_status()
        found = re.match(r"app;dur=([0-9.]+)", r.headers["server-timing"])
        assert found, r.headers.get("server-timing")
        server.append(float(found.group(1)))
    return {"server": stats(server), "client": stats(total)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--reads", type=int, default=200)
    args = parser.parse_args()
    with running_server() as (url, token, settings):
        store = Store.open(settings.database_url)
        account = store.accounts.authenticate(token)
        assert account is not None
        seed(store, account.id, args.sessions)
        with httpx.Client(base_url=url, timeout=60) as client:
            signed = client.post("/dashboard/login", data={"token": token})
            assert signed.status_code == 303, signed.text
            client.get("/dashboard/sessions")  # warm the replica
            deep = client.get("/dashboard/sessions").text.split("cursor=", 1)[1].split('"')[0]
            results = {
                "first page": measure(client, "/dashboard/sessions", args.reads),
                "search by name": measure(client, "/dashboard/sessions?q=alpha", args.reads),
                "filter by status": measure(
                    client, "/dashboard/sessions?status=closed", args.reads
                ),
                "second page (cursor)": measure(
                    client, f"/dashboard/sessions?cursor={deep}", args.reads
                ),
            }
    print(f"sessions page, {args.sessions} sessions in the account, {args.reads} reads each")
    print(f"{'page':<24}{'server p50/p95/p99 ms':>26}{'client p50/p95 ms':>22}")
    for name, r in results.items():
        s, c = r["server"], r["client"]
        print(
            f"{name:<24}{s['p50_ms']:>10.1f}{s['p95_ms']:>8.1f}{s['p99_ms']:>8.1f}"
            f"{c['p50_ms']:>13.1f}{c['p95_ms']:>8.1f}"
        )
    met = results["first page"]["server"]["p50_ms"] <= TARGET_P50_MS
    print(f"target: server p50 <= {TARGET_P50_MS:.0f} ms: {'met' if met else 'missed'}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "sessions": args.sessions,
                "reads": args.reads,
                "target_server_p50_ms": TARGET_P50_MS,
                "met": met,
                "results": results,
                "when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
