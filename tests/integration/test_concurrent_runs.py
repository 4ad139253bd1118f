"""Concurrent runs on fresh sessions, over real HTTP against the real server: they queue or
run side by side, never fail (issue 9, bug 1: some first runs that arrived together answered
502 "could not start the sandboxed process: 'bash'")."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

pytestmark = pytest.mark.timeout(300)

SESSIONS = 8
THREADS = 16
RUNS_PER_SESSION = 12


def _fresh_sessions(server: str, store, name: str, count: int) -> tuple[str, list[str]]:  # type: ignore[no-untyped-def]
    account = store.accounts.get_or_create(name)
    token = str(store.accounts.issue_token(account.id))
    with httpx.Client(
        base_url=server, headers={"Authorization": f"Bearer {token}"}, timeout=120
    ) as c:
        made = [
            c.post("/v2/sessions", json={"compute": {"provider": "local"}}) for _ in range(count)
        ]
    assert all(r.status_code == 201 for r in made), [r.text for r in made]
    return token, [r.json()["session_id"] for r in made]


def test_concurrent_first_runs_on_fresh_sessions_all_succeed(server: str, store) -> None:  # type: ignore[no-untyped-def]
    # Two accounts (the test server allows 6 live sessions per account), 4 sessions each.
    owners: dict[str, str] = {}
    for name in ("concurrent-runs-a", "concurrent-runs-b"):
        token, made = _fresh_sessions(server, store, name, SESSIONS // 2)
        owners |= {session_id: token for session_id in made}
    ids = list(owners)
    # The first runs of every session arrive together: round-robin over the sessions.
    jobs = [(ids[i % SESSIONS], i) for i in range(SESSIONS * RUNS_PER_SESSION)]
    limits = httpx.Limits(max_connections=THREADS, max_keepalive_connections=THREADS)

    with httpx.Client(base_url=server, timeout=120, limits=limits) as c:

        def one(job: tuple[str, int]) -> tuple[int, str]:
            session_id, n = job
            r = c.post(
                f"/v2/sessions/{session_id}/run",
                json={"code": f"echo run-{n}"},
                headers={"Authorization": f"Bearer {owners[session_id]}"},
            )
            if r.status_code != 200:
                return r.status_code, r.text
            return 200, r.json()["stdout"]

        with ThreadPoolExecutor(THREADS) as pool:
            results = list(pool.map(one, jobs))
        for session_id in ids:
            auth = {"Authorization": f"Bearer {owners[session_id]}"}
            c.delete(f"/v2/sessions/{session_id}", headers=auth)

    failures = [(status, text) for status, text in results if status != 200]
    assert not failures, f"{len(failures)} of {len(jobs)} runs failed: {Counter(failures)}"
    assert [out for _, out in results] == [f"run-{n}\n" for _, n in jobs]
