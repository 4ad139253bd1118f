"""Transcripts are bounded (issue 10, finding 7), on both backends: past the budget the
oldest exec output is trimmed in the append's own transaction (the entry stays and says
so), and reads page by bytes."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from cerver.store.accounts import Accounts
from cerver.store.sessions import TRIMMED_CODE_CHARS, Sessions, entry_size
from tests.store.rows import session_row

pytestmark = pytest.mark.timeout(60)

BUDGET = 20_000


@pytest.fixture
def sessions(engine: Engine) -> Sessions:
    return Sessions(engine)


@pytest.fixture
def session_id(sessions: Sessions, engine: Engine) -> str:
    row = session_row(Accounts(engine).get_or_create("alice").id)
    sessions.create(row, [("system", {"event": "created"})])
    return row.id


def _exec(i: int, out_bytes: int) -> dict:  # type: ignore[type-arg]
    return {
        "language": "shell",
        "code": f"run {i}",
        "result": {"stdout": "x" * out_bytes, "stderr": "e", "exit_code": i % 2},
    }


def test_budget_trims_oldest_exec_output_and_keeps_the_entry(
    sessions: Sessions, session_id: str
) -> None:
    for i in range(10):
        sessions.append(session_id, "exec", _exec(i, 4_000), budget_bytes=BUDGET)
        sessions.append(session_id, "system", {"event": f"note {i}"}, budget_bytes=BUDGET)
    total = sessions.transcript_bytes(session_id)
    assert total <= BUDGET
    entries = sessions.transcript(session_id)
    assert [e.seq for e in entries] == list(range(1, 22))  # nothing removed, no gap
    assert total == sum(entry_size(e.content) for e in entries)
    execs = [e for e in entries if e.type == "exec"]
    trimmed = [e for e in execs if "trimmed" in e.content]
    kept = [e for e in execs if "trimmed" not in e.content]
    # The oldest ones were trimmed, the newest kept whole.
    assert trimmed and kept and max(e.seq for e in trimmed) < min(e.seq for e in kept)
    first = trimmed[0].content
    assert first["result"] == {"stdout": "", "stderr": "", "exit_code": 0}
    assert first["code"] == "run 0"
    assert first["trimmed"]["removed_bytes"] == {"stdout": 4_000, "stderr": 1}
    assert first["trimmed"]["budget_bytes"] == BUDGET
    assert kept[-1].content["result"]["stdout"] == "x" * 4_000
    # Entries of other types are never touched.
    assert [e.content for e in entries if e.type == "system"][1:] == [
        {"event": f"note {i}"} for i in range(10)
    ]


def test_long_code_is_cut_when_trimmed(sessions: Sessions, session_id: str) -> None:
    big = {"language": "python", "code": "#" * 15_000, "result": {"stdout": "ok"}}
    sessions.append(session_id, "exec", big, budget_bytes=BUDGET)
    sessions.append(session_id, "exec", _exec(1, 10_000), budget_bytes=BUDGET)
    first = sessions.transcript(session_id, since=1, limit=1)[0].content
    assert first["code"] == "#" * TRIMMED_CODE_CHARS
    assert first["trimmed"]["removed_bytes"]["code"] == 15_000 - TRIMMED_CODE_CHARS
    assert sessions.transcript_bytes(session_id) <= BUDGET


def test_without_a_budget_nothing_is_trimmed(sessions: Sessions, session_id: str) -> None:
    for i in range(6):
        sessions.append(session_id, "exec", _exec(i, 4_000))
    assert not any("trimmed" in e.content for e in sessions.transcript(session_id))
    assert sessions.transcript_bytes(session_id) > BUDGET


def test_pages_by_bytes(sessions: Sessions, session_id: str) -> None:
    for i in range(10):
        sessions.append(session_id, "exec", _exec(i, 1_000))
    one = entry_size(_exec(0, 1_000))
    page, more = sessions.transcript_page(
        session_id, since=0, max_entries=100, max_bytes=2 * one + 100
    )
    assert [e.seq for e in page] == [1, 2, 3] and more  # the small opening entry + 2 execs
    seen = [e.seq for e in page]
    while more:
        page, more = sessions.transcript_page(
            session_id, since=seen[-1], max_entries=100, max_bytes=2 * one + 100
        )
        seen += [e.seq for e in page]
    assert seen == list(range(1, 12))
    # The entry cap holds too, and a single entry larger than the page still comes back.
    page, more = sessions.transcript_page(session_id, since=0, max_entries=2, max_bytes=10**9)
    assert [e.seq for e in page] == [1, 2] and more
    page, more = sessions.transcript_page(session_id, since=1, max_entries=100, max_bytes=10)
    assert [e.seq for e in page] == [2] and more
    # The tail counts bytes from the newest entry back.
    page, more = sessions.transcript_page(
        session_id, tail=20, max_entries=100, max_bytes=2 * one + 10
    )
    assert [e.seq for e in page] == [10, 11] and not more
