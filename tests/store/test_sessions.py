"""Sessions and transcripts on both backends: the page cursor order, the store's own
numbering of transcript entries, reads by tail/since/limit, and JSON that PostgreSQL's
``json`` type is strict about."""

from __future__ import annotations

import itertools

import pytest
from sqlalchemy import Engine

from cerver.store.accounts import Accounts
from cerver.store.sessions import Sessions
from tests.store.rows import session_row

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def sessions(engine: Engine) -> Sessions:
    return Sessions(engine)


@pytest.fixture
def account_id(engine: Engine) -> str:
    return Accounts(engine).get_or_create("alice").id


def test_create_and_get(sessions: Sessions, account_id: str, engine: Engine) -> None:
    row = session_row(
        account_id,
        name="build",
        metrics={"runs": 0, "latency_ms": [1.5, 2.25]},
        routing={"attempts": [{"provider": "local", "ok": True}]},
    )
    sessions.create(row, [("system", {"text": "opened"}), ("user", {"text": "hi"})])
    assert sessions.get(row.id) == row
    assert sessions.get(row.id, account_id=account_id) == row
    other = Accounts(engine).get_or_create("mallory").id
    assert sessions.get(row.id, account_id=other) is None
    assert sessions.get("sess_missing") is None
    assert [(e.seq, e.type) for e in sessions.transcript(row.id)] == [(1, "system"), (2, "user")]


def test_page_orders_newest_first_and_the_cursor_breaks_ties_by_id(
    sessions: Sessions, account_id: str
) -> None:
    # Two pairs share a created_at, to show the (created_at, id) cursor never skips or repeats.
    times = [100.0, 200.5, 200.5, 300.25, 300.25, 400.125]
    rows = [session_row(account_id, created_at=t, updated_at=t) for t in times]
    for r in rows:
        sessions.create(r, [])
    expected = [r.id for r in sorted(rows, key=lambda r: (r.created_at, r.id), reverse=True)]

    seen: list[str] = []
    before: tuple[float, str] | None = None
    while True:
        page = sessions.page(account_id, limit=4, before=before)
        seen += [r.id for r in page]
        if len(page) < 4:
            break
        before = (page[-1].created_at, page[-1].id)
    assert seen == expected
    assert [r.id for r in sessions.page(account_id, limit=2)] == expected[:2]


def test_page_filters_by_name_and_account(
    sessions: Sessions, account_id: str, engine: Engine
) -> None:
    other = Accounts(engine).get_or_create("bob").id
    named = session_row(account_id, name="ci")
    for r in (named, session_row(account_id, name="other"), session_row(other, name="ci")):
        sessions.create(r, [])
    assert [r.id for r in sessions.page(account_id, limit=10, name="ci")] == [named.id]
    assert len(sessions.page(account_id, limit=10)) == 2


def test_append_numbers_entries_after_the_opening_ones(sessions: Sessions, account_id: str) -> None:
    row = session_row(account_id)
    sessions.create(row, [("system", {"text": "opened"})])
    seqs = [sessions.append(row.id, "run", {"n": n}) for n in range(5)]
    assert seqs == [2, 3, 4, 5, 6]
    entries = sessions.transcript(row.id)
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5, 6]
    assert [e.content for e in entries[1:]] == [{"n": n} for n in range(5)]
    assert all(a.ts <= b.ts for a, b in itertools.pairwise(entries))
    assert sessions.transcript_length(row.id) == 6
    # Another session numbers from 1 on its own.
    fresh = session_row(account_id)
    sessions.create(fresh, [])
    assert sessions.append(fresh.id, "run", {}) == 1


def test_append_updates_the_session_row_in_the_same_transaction(
    sessions: Sessions, account_id: str
) -> None:
    row = session_row(account_id)
    sessions.create(row, [])
    sessions.append(row.id, "run", {"n": 1}, session_values={"metrics": {"runs": 1}})
    got = sessions.get(row.id)
    assert got is not None and got.metrics == {"runs": 1}
    assert got.updated_at >= row.updated_at


def test_append_to_a_missing_session_fails_without_writing(sessions: Sessions) -> None:
    with pytest.raises(RuntimeError, match="no such session"):
        sessions.append("sess_missing", "run", {})
    assert sessions.transcript_length("sess_missing") == 0


def test_transcript_reads(sessions: Sessions, account_id: str) -> None:
    row = session_row(account_id)
    sessions.create(row, [])
    for n in range(10):
        sessions.append(row.id, "run", {"n": n})
    assert [e.seq for e in sessions.transcript(row.id, tail=3)] == [8, 9, 10]
    assert [e.seq for e in sessions.transcript(row.id, since=7)] == [8, 9, 10]
    assert [e.seq for e in sessions.transcript(row.id, since=2, limit=3)] == [3, 4, 5]
    assert [e.seq for e in sessions.transcript(row.id, limit=2)] == [1, 2]


def test_json_round_trips_what_postgres_is_strict_about(
    sessions: Sessions, account_id: str
) -> None:
    row = session_row(account_id, metrics={"p50": float("nan"), "max": float("inf")})
    sessions.create(row, [])
    content = {
        "stdout": 'nul\x00byte, quote " backslash \\ and ünïcødé ✓',
        "nested": {"list": [1, 2.5, None, True, {"deep": []}]},
        "nan": float("nan"),
        "big": 2**53,
    }
    seq = sessions.append(row.id, "run", content)
    (entry,) = sessions.transcript(row.id, since=seq - 1)
    assert entry.content == {**content, "nan": None}
    got = sessions.get(row.id)
    assert got is not None and got.metrics == {"p50": None, "max": None}


def test_timestamps_keep_full_float_precision(sessions: Sessions, account_id: str) -> None:
    t = 1_767_225_600.123456
    row = session_row(account_id, created_at=t, updated_at=t)
    sessions.create(row, [])
    got = sessions.get(row.id)
    assert got is not None and got.created_at == t


def test_update_and_delete(sessions: Sessions, account_id: str) -> None:
    row = session_row(account_id)
    sessions.create(row, [("system", {})])
    sessions.update(row.id, status="closed", closed_at=123.5)
    got = sessions.get(row.id)
    assert got is not None and got.status == "closed" and got.closed_at == 123.5
    sessions.delete(row.id)
    assert sessions.get(row.id) is None
    assert sessions.transcript_length(row.id) == 0
