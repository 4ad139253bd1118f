"""Opening a fresh SQLite store while another process holds a lock on it (issue 9, bug 2):
the switch to WAL waits for the lock instead of failing with "database is locked"."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from cerver.store.db import new_engine

pytestmark = pytest.mark.timeout(60)

HOLD_S = 1.0

# Another process takes the write lock of the fresh file (still in rollback-journal mode),
# says so, holds it for a moment and commits.
_HOLDER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
conn.execute("CREATE TABLE held (x)")
print("held", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
"""


def test_fresh_file_locked_by_another_process_opens_in_wal(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(path), str(HOLD_S)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        engine = new_engine(f"sqlite:///{path}")
        with engine.connect() as conn:
            mode = conn.execute(text("PRAGMA journal_mode")).scalar()
            tables = conn.execute(text("SELECT name FROM sqlite_master")).scalars().all()
        engine.dispose()
        waited = time.monotonic() - started
    finally:
        assert holder.wait(timeout=30) == 0
    assert mode == "wal"
    assert "held" in tables  # the other process's committed work is there
    assert waited < HOLD_S + 5.0  # it waited for the lock, not for the whole busy timeout


def test_in_memory_store_opens_at_once() -> None:
    started = time.monotonic()
    engine = new_engine("sqlite:///:memory:")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT 1")).scalar() == 1
    engine.dispose()
    assert time.monotonic() - started < 2.0
