"""Concurrent appends to one transcript, from threads and from two processes, on both
backends: every append gets its own seq and the transcript is exactly 1..N, no gap."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import Engine

from cerver.store.accounts import Accounts
from cerver.store.sessions import Sessions
from tests.store import _worker
from tests.store.rows import session_row

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]

THREADS = 8
PER_THREAD = 25


def _session(engine: Engine) -> tuple[Sessions, str]:
    sessions = Sessions(engine)
    row = session_row(Accounts(engine).get_or_create("alice").id)
    sessions.create(row, [("system", {"text": "opened"})])
    return sessions, row.id


def _assert_gap_free(sessions: Sessions, session_id: str, returned: list[int]) -> None:
    entries = sessions.transcript(session_id, limit=100_000)
    n = len(entries)
    assert [e.seq for e in entries] == list(range(1, n + 1))
    assert sorted(returned) == list(range(2, n + 1)), "each append returns its own seq"


def test_threads_append_gap_free(engine: Engine) -> None:
    sessions, sid = _session(engine)

    def work(t: int) -> list[int]:
        return [sessions.append(sid, "run", {"t": t, "n": n}) for n in range(PER_THREAD)]

    with ThreadPoolExecutor(THREADS) as pool:
        returned = [seq for batch in pool.map(work, range(THREADS)) for seq in batch]
    assert len(returned) == THREADS * PER_THREAD
    _assert_gap_free(sessions, sid, returned)
    # Each thread's entries are all there, in the order that thread wrote them.
    entries = sessions.transcript(sid, limit=100_000)[1:]
    for t in range(THREADS):
        mine = [e.content["n"] for e in entries if e.content["t"] == t]
        assert mine == list(range(PER_THREAD))


def test_two_processes_append_gap_free(db_url: str, engine: Engine) -> None:
    sessions, sid = _session(engine)
    results = _worker.spawn(
        [["append", db_url, sid, tag, 3, 20] for tag in ("a", "b")],
    )
    returned = [seq for result in results for seq in result]
    assert len(returned) == 2 * 3 * 20
    _assert_gap_free(sessions, sid, returned)
    tags = Counter(e.content["tag"] for e in sessions.transcript(sid, limit=100_000)[1:])
    assert tags == {"a": 60, "b": 60}
