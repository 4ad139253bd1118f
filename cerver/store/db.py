"""Engine creation, per-dialect tuning, and the schema migrations that run on first use.

SQLite (the embedded default) runs in WAL mode with a busy timeout, because a Serve replica
and many session actors write to the same file from different processes. PostgreSQL is
selected by a ``postgresql://`` (or ``postgres://``) URL and driven by psycopg 3.

Both engines serialise JSON the same way: non-finite floats (NaN, ±inf), which PostgreSQL's
``json`` type rejects, are stored as ``null`` on both backends so they behave alike.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Table, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite

from cerver.store.migrations import migrate

_ENGINES: dict[str, Engine] = {}
_LOCK = threading.Lock()

_POSTGRES_SCHEMES = ("postgresql://", "postgres://")
_PSYCOPG_SCHEME = "postgresql+psycopg://"


# How long a connection waits for another process's lock (busy timeout), and for the
# one-time switch of a fresh file to WAL.
# 30 s: a loaded burst of 100 session creates (every host and replica writing to one file
# on a shared 2-core machine) saw waits past 10 s, and each answered 500 (issue 16, burst).
SQLITE_BUSY_MS = 30_000


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")  # before anything takes a lock
    _sqlite_wal(cursor)
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_wal(cursor: Any) -> None:
    """Put the file in WAL mode (persistent: done once per file, then only read back).

    Switching a fresh file to WAL needs its exclusive lock, and SQLite answers "database is
    locked" at once, without its busy handler, when another process holds a lock on it
    (several processes opening one fresh store together: Serve replicas, session hosts).
    So the switch is retried until the busy timeout is spent."""
    deadline = time.monotonic() + SQLITE_BUSY_MS / 1000.0
    delay = 0.005
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL").fetchall()  # ":memory:" answers "memory"
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def json_dumps(value: Any) -> str:
    """JSON for a JSON column: strict JSON (valid for PostgreSQL), NaN/±inf become null."""
    try:
        return json.dumps(value, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(value), allow_nan=False)


def insert_or(conn: Connection, table: Table) -> postgresql.Insert | sqlite.Insert:
    """An INSERT that takes ``on_conflict_do_nothing`` / ``on_conflict_do_update`` (the same
    API on both dialects): the atomic way to insert-if-absent or upsert under concurrency."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def driver_url(url: str) -> str:
    """The SQLAlchemy URL for a configured one: plain PostgreSQL URLs get psycopg 3."""
    for scheme in _POSTGRES_SCHEMES:
        if url.startswith(scheme):
            return _PSYCOPG_SCHEME + url[len(scheme) :]
    return url


def new_engine(url: str) -> Engine:
    """A new engine for ``url`` with the per-dialect tuning; not cached, not migrated."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_MS / 1000.0},
            pool_size=8,
            json_serializer=json_dumps,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(
        driver_url(url),
        connect_args={"connect_timeout": 10},
        pool_pre_ping=True,
        pool_size=8,
        json_serializer=json_dumps,
    )


def engine_for(url: str) -> Engine:
    """One engine per URL per process; the schema is migrated to the latest version on first
    use (see ``cerver.store.migrations``)."""
    engine = _ENGINES.get(url)
    if engine is not None:
        return engine
    with _LOCK:
        engine = _ENGINES.get(url)
        if engine is None:
            engine = new_engine(url)
            try:
                migrate(engine)
            except BaseException:
                engine.dispose()
                raise
            _ENGINES[url] = engine
    return engine


def dispose(url: str) -> None:
    """Close the pooled connections of ``url``'s engine and forget it (tests, shutdown)."""
    with _LOCK:
        engine = _ENGINES.pop(url, None)
    if engine is not None:
        engine.dispose()
