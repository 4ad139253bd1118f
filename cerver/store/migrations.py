"""Versioned schema migrations, run by every process that opens the store.

The database records what has been applied in ``schema_migrations`` (one row per version).
``migrate(engine)`` applies the missing steps of ``MIGRATIONS`` in order, with their rows, in
one transaction that holds a lock admitting one migrator at a time:

- PostgreSQL: ``pg_advisory_xact_lock`` (released at commit or rollback); PostgreSQL's DDL
  is transactional, so a step that fails leaves nothing half-applied.
- SQLite: ``BEGIN IMMEDIATE`` takes the database's write lock up front (also transactional).

A process that finds the database up to date (the common case: every session actor opens
the store) only reads ``schema_migrations`` and takes no lock. A second process that starts
while the first migrates waits for the lock, re-reads the version, and finds nothing to do.

Steps are frozen: a step describes the schema *as it was* at its version, never
``cerver.store.schema`` (which describes the latest one). To change the schema, edit
``schema.py`` and append a step that takes a version-N database to the new shape;
``tests/store/test_migrations.py`` checks that the steps end where ``schema.py`` says.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Connection,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    func,
    insert,
    inspect,
    select,
    text,
)

from cerver.store.ids import now

migrations_table = Table(
    "schema_migrations",
    MetaData(),
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("name", String(100), nullable=False),
    Column("applied_at", Float, nullable=False),
)

# One 64-bit key for PostgreSQL's advisory lock, derived from a fixed name so that every
# Cerver process (and nothing else) agrees on it.
ADVISORY_LOCK_KEY = int.from_bytes(
    hashlib.sha256(b"cerver.store.schema_migrations").digest()[:8], "big", signed=True
)


class MigrationError(RuntimeError):
    """The database cannot be brought to the schema this code expects."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    apply: Callable[[Connection], None]


def _v1_initial(conn: Connection) -> None:
    """The schema as of version 1. ``checkfirst`` adopts a database that an older Cerver
    created with a bare ``create_all`` (same tables, no ``schema_migrations`` yet)."""
    m = MetaData()
    Table(
        "accounts",
        m,
        Column("id", String(40), primary_key=True),
        Column("name", String(200), nullable=False, unique=True),
        Column("created_at", Float, nullable=False),
    )
    Table(
        "tokens",
        m,
        Column("id", String(40), primary_key=True),
        Column("account_id", String(40), ForeignKey("accounts.id"), nullable=False),
        Column("token_hash", String(64), nullable=False, unique=True),
        Column("prefix", String(16), nullable=False),
        Column("created_at", Float, nullable=False),
        Column("revoked_at", Float, nullable=True),
    )
    Table(
        "sessions",
        m,
        Column("id", String(40), primary_key=True),
        Column("account_id", String(40), ForeignKey("accounts.id"), nullable=False),
        Column("name", String(200), nullable=True),
        Column("status", String(20), nullable=False),
        Column("provider", String(40), nullable=True),
        Column("compute_id", String(40), nullable=True),
        Column("harness", String(40), nullable=True),
        Column("runtime", String(20), nullable=False),
        Column("created_at", Float, nullable=False),
        Column("updated_at", Float, nullable=False),
        Column("closed_at", Float, nullable=True),
        Column("metrics", JSON, nullable=False),
        Column("routing", JSON, nullable=True),
        Index("ix_sessions_account_created", "account_id", "created_at"),
    )
    Table(
        "transcript",
        m,
        Column("session_id", String(40), ForeignKey("sessions.id"), primary_key=True),
        Column("seq", Integer, primary_key=True, autoincrement=False),
        Column("ts", Float, nullable=False),
        Column("type", String(20), nullable=False),
        Column("content", JSON, nullable=False),
    )
    Table(
        "computes",
        m,
        Column("id", String(40), primary_key=True),
        Column("account_id", String(40), ForeignKey("accounts.id"), nullable=False),
        Column("provider", String(40), nullable=False),
        Column("status", String(20), nullable=False),
        Column("record", JSON, nullable=True),
        Column("session_id", String(40), nullable=True),
        Column("created_at", Float, nullable=False),
        Column("released_at", Float, nullable=True),
        Column("provision_time_ms", Float, nullable=True),
        Index("ix_computes_account", "account_id", "created_at"),
    )
    Table(
        "provider_credentials",
        m,
        Column("account_id", String(40), ForeignKey("accounts.id"), primary_key=True),
        Column("provider", String(40), primary_key=True),
        Column("refs", JSON, nullable=False),
        Column("created_at", Float, nullable=False),
    )
    Table(
        "observations",
        m,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("provider", String(40), nullable=False),
        Column("metric", String(40), nullable=False),
        Column("value", Float, nullable=False),
        Column("ok", Boolean, nullable=False),
        Column("source", String(20), nullable=False),
        Column("ts", Float, nullable=False),
        Index("ix_observations_provider_metric", "provider", "metric", "ts"),
    )
    m.create_all(conn, checkfirst=True)


def _v2_llm_spend(conn: Connection) -> None:
    """Version 2: account limits (the LLM budget) and the LLM spend ledger."""
    m = MetaData()
    Table("accounts", m, Column("id", String(40), primary_key=True))
    Table(
        "account_limits",
        m,
        Column("account_id", String(40), ForeignKey("accounts.id"), primary_key=True),
        Column("llm_budget_usd", Float, nullable=True),
        Column("updated_at", Float, nullable=False),
    )
    Table(
        "llm_spend",
        m,
        Column("id", String(40), primary_key=True),
        Column("account_id", String(40), ForeignKey("accounts.id"), nullable=False),
        Column("session_id", String(40), nullable=True),
        Column("turn_id", String(40), nullable=True),
        Column("kind", String(10), nullable=False),
        Column("month", String(7), nullable=False),
        Column("model", String(100), nullable=False),
        Column("harness", String(40), nullable=False),
        Column("input_tokens", Integer, nullable=False),
        Column("output_tokens", Integer, nullable=False),
        Column("cache_read_tokens", Integer, nullable=False),
        Column("cache_write_tokens", Integer, nullable=False),
        Column("reasoning_tokens", Integer, nullable=False),
        Column("cost_usd", Float, nullable=False),
        Column("baseline_usd", Float, nullable=False),
        Column("estimated", Boolean, nullable=False),
        Column("created_at", Float, nullable=False),
        Index("ix_llm_spend_account_month", "account_id", "month"),
        Index("ix_llm_spend_session", "session_id"),
    )
    m.tables["account_limits"].create(conn, checkfirst=True)
    m.tables["llm_spend"].create(conn, checkfirst=True)


def _dashboard(conn: Connection) -> None:
    """Token names and last use for the dashboard's token page, and browser sessions."""
    m = MetaData()
    Table("accounts", m, Column("id", String(40), primary_key=True))
    Table(
        "browser_sessions",
        m,
        Column("id_hash", String(64), primary_key=True),
        Column("account_id", String(40), ForeignKey("accounts.id"), nullable=False),
        Column("csrf_token", String(64), nullable=False),
        Column("created_at", Float, nullable=False),
        Column("expires_at", Float, nullable=False),
    )
    m.tables["browser_sessions"].create(conn, checkfirst=True)
    existing = {c["name"] for c in inspect(conn).get_columns("tokens")}
    for name, kind in (("name", "VARCHAR(100)"), ("last_used_at", "FLOAT")):
        if name not in existing:
            conn.execute(text(f"ALTER TABLE tokens ADD COLUMN {name} {kind}"))


def _v4_transcript_budget(conn: Connection) -> None:
    """Version 4: per-session transcript byte budget (issue 10, finding 7): each entry's
    size and whether it was trimmed, the session's running total. Entries written before
    this step count as size 0 until they are trimmed."""
    found = inspect(conn)
    columns = {
        table: {c["name"] for c in found.get_columns(table)} for table in ("sessions", "transcript")
    }
    # Each part only if missing: a database made by a bare create_all already has them.
    if "transcript_bytes" not in columns["sessions"]:
        conn.execute(
            text("ALTER TABLE sessions ADD COLUMN transcript_bytes INTEGER NOT NULL DEFAULT 0")
        )
    if "size" not in columns["transcript"]:
        conn.execute(text("ALTER TABLE transcript ADD COLUMN size INTEGER NOT NULL DEFAULT 0"))
    if "trimmed" not in columns["transcript"]:
        conn.execute(
            text("ALTER TABLE transcript ADD COLUMN trimmed BOOLEAN NOT NULL DEFAULT false")
        )
    if "ix_transcript_untrimmed" not in {i["name"] for i in found.get_indexes("transcript")}:
        conn.execute(
            text("CREATE INDEX ix_transcript_untrimmed ON transcript (session_id, trimmed, seq)")
        )


def _v5_relay(conn: Connection) -> None:
    """Relay device logins and relay credentials (cerver/relay/)."""
    m = MetaData()
    Table("accounts", m, Column("id", String(40), primary_key=True))
    Table(
        "relay_logins",
        m,
        Column("device_hash", String(64), primary_key=True),
        Column("user_code", String(9), nullable=False, unique=True),
        Column("status", String(20), nullable=False),
        Column("account_id", String(40), ForeignKey("accounts.id"), nullable=True),
        Column("host", JSON, nullable=False),
        Column("interval_s", Float, nullable=False),
        Column("created_at", Float, nullable=False),
        Column("expires_at", Float, nullable=False),
        Column("last_poll_at", Float, nullable=True),
        Column("compute_id", String(40), nullable=True),
    )
    Table(
        "relay_credentials",
        m,
        Column("token_hash", String(64), primary_key=True),
        Column("compute_id", String(40), nullable=False, unique=True),
        Column("account_id", String(40), ForeignKey("accounts.id"), nullable=False),
        Column("created_at", Float, nullable=False),
        Column("revoked_at", Float, nullable=True),
    )
    m.tables["relay_logins"].create(conn, checkfirst=True)
    m.tables["relay_credentials"].create(conn, checkfirst=True)


# --- issue 11 (cloud): provider credentials hold sealed values and usage times ---
def _v6_provider_credential_values(conn: Connection) -> None:
    """provider_credentials gains ``sealed`` (field -> ciphertext of a value encrypted with
    the server key), ``updated_at`` (last rotation) and ``last_used_at``."""
    present = {c["name"] for c in inspect(conn).get_columns("provider_credentials")}
    for name, type_ in (("sealed", "JSON"), ("updated_at", "FLOAT"), ("last_used_at", "FLOAT")):
        if name not in present:  # a database made by create_all already has them
            conn.execute(text(f"ALTER TABLE provider_credentials ADD COLUMN {name} {type_}"))


# --- issue 13 (llmmodels): an account's openai-compatible models, session budgets ---
def _v7_llm_models_and_session_budgets(conn: Connection) -> None:
    """provider_credentials gains ``models`` (the model names an account's openai-compatible
    endpoint serves); ``session_limits`` holds a session's own LLM budget."""
    present = {c["name"] for c in inspect(conn).get_columns("provider_credentials")}
    if "models" not in present:  # a database made by create_all already has it
        conn.execute(text("ALTER TABLE provider_credentials ADD COLUMN models JSON"))
    m = MetaData()
    Table("accounts", m, Column("id", String(40), primary_key=True))
    Table(
        "session_limits",
        m,
        Column("session_id", String(40), primary_key=True),
        Column("account_id", String(40), ForeignKey("accounts.id"), nullable=False),
        Column("llm_budget_usd", Float, nullable=True),
        Column("updated_at", Float, nullable=False),
    )
    m.tables["session_limits"].create(conn, checkfirst=True)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial schema", _v1_initial),
    Migration(2, "llm spend and account limits", _v2_llm_spend),
    Migration(3, "dashboard: browser sessions, token names and last use", _dashboard),
    Migration(4, "transcript byte budget", _v4_transcript_budget),
    Migration(5, "relay logins and credentials", _v5_relay),
    Migration(6, "provider credential values", _v6_provider_credential_values),
    Migration(7, "llm models per account, session budgets", _v7_llm_models_and_session_budgets),
)

LATEST_VERSION = MIGRATIONS[-1].version


def current_version(conn: Connection) -> int:
    """The highest applied version; 0 for a database that has never been migrated."""
    if not inspect(conn).has_table(migrations_table.name):
        return 0
    found = conn.execute(select(func.max(migrations_table.c.version))).scalar_one()
    return int(found or 0)


def _check_not_newer(version: int) -> None:
    if version > LATEST_VERSION:
        raise MigrationError(
            f"the database is at schema version {version}, newer than this Cerver knows "
            f"({LATEST_VERSION}); upgrade Cerver instead of pointing an old one at it"
        )


@contextmanager
def _exclusive(conn: Connection) -> Iterator[None]:
    """A transaction that no other migrator can run alongside; commits on success."""
    if conn.dialect.name == "postgresql":
        with conn.begin():
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
            yield
    elif conn.dialect.name == "sqlite":
        # pysqlite opens transactions lazily (and not for DDL); take the write lock now.
        with conn.begin():
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            yield
    else:
        raise MigrationError(f"no migration lock for the {conn.dialect.name!r} dialect")


def migrate(engine: Engine) -> int:
    """Bring the database to ``LATEST_VERSION``; returns it. Idempotent, concurrent-safe."""
    with engine.connect() as conn:
        version = current_version(conn)
        conn.rollback()
        _check_not_newer(version)
        if version == LATEST_VERSION:
            return version
        with _exclusive(conn):
            migrations_table.create(conn, checkfirst=True)
            version = current_version(conn)
            _check_not_newer(version)
            for step in MIGRATIONS:
                if step.version <= version:
                    continue
                step.apply(conn)
                conn.execute(
                    insert(migrations_table).values(
                        version=step.version, name=step.name, applied_at=now()
                    )
                )
    return LATEST_VERSION


__all__ = [
    "LATEST_VERSION",
    "MIGRATIONS",
    "Migration",
    "MigrationError",
    "current_version",
    "migrate",
    "migrations_table",
]
