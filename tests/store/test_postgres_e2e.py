"""`cerver serve` on PostgreSQL, as an operator runs it: a real server process with its own
Ray and CERVER_HOME, CERVER_DATABASE_URL pointing at a fresh PostgreSQL database. One session
runs ``echo hi``; after SIGTERM the rows are in PostgreSQL and no process is left behind."""

from __future__ import annotations

import os

import httpx
import pytest
from sqlalchemy import create_engine, select

from cerver.store import schema
from cerver.store.accounts import hash_token
from cerver.store.db import driver_url
from tests.conftest import free_port, make_home
from tests.serve_process import descendants, leftovers, start_server, stop_server

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]


def test_serve_on_postgres(postgres_url: str) -> None:
    home, port = make_home(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env |= {
        "CERVER_HOME": str(home),
        "CERVER_RAY_NAMESPACE": "pg-e2e",
        "CERVER_DATABASE_URL": postgres_url,
    }
    proc, token = start_server(env, port)
    tree: set[int] = set()
    try:
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=60) as c:
            r = c.post("/v2/sessions", json={"compute": {"provider": "local"}})
            assert r.status_code == 201, r.text
            sid = r.json()["session_id"]
            out = c.post(f"/v2/sessions/{sid}/run", json={"code": "echo hi"})
            assert out.status_code == 200, out.text
            assert out.json()["stdout"] == "hi\n"
            view = c.get(f"/v2/sessions/{sid}", params={"full": True}).json()
            seqs = [e["seq"] for e in view["transcript"]]
            assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) >= 2
            assert view["transcript_length"] == len(seqs)
            metrics = c.get(f"/v2/sessions/{sid}/metrics")
            assert metrics.status_code == 200 and metrics.json()["session_id"] == sid
            closed = c.delete(f"/v2/sessions/{sid}")
            assert closed.status_code == 200 and closed.json()["status"] == "closed"
        tree = descendants(proc.pid)
        assert tree, "the server should have started Ray processes"
    finally:
        stop_server(proc)
    assert not leftovers(tree), "processes left behind"

    # The server wrote to PostgreSQL (and not to a SQLite file in its home).
    assert not (home / "cerver.db").exists()
    engine = create_engine(driver_url(postgres_url))
    try:
        with engine.connect() as conn:
            session = conn.execute(select(schema.sessions).where(schema.sessions.c.id == sid)).one()
            entries = conn.execute(
                select(schema.transcript.c.seq, schema.transcript.c.content)
                .where(schema.transcript.c.session_id == sid)
                .order_by(schema.transcript.c.seq)
            ).all()
            tokens = conn.execute(select(schema.tokens.c.token_hash)).scalars().all()
            computes = (
                conn.execute(
                    select(schema.computes.c.status).where(schema.computes.c.provider == "local")
                )
                .scalars()
                .all()
            )
    finally:
        engine.dispose()
    assert session.status == "closed" and session.closed_at is not None
    assert [e.seq for e in entries] == list(range(1, len(entries) + 1))
    assert len(entries) > len(seqs), "closing the session appended to the transcript"
    (run,) = [e.content for e in entries if e.content.get("code") == "echo hi"]
    assert run["result"]["stdout"] == "hi\n" and run["result"]["exit_code"] == 0
    assert tokens == [hash_token(token)]
    assert computes and all(s == "released" for s in computes)
