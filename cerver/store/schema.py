"""The one schema, SQLAlchemy Core, shared by SQLite (embedded) and PostgreSQL (clusters)."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
)

metadata = MetaData()

accounts = Table(
    "accounts",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
)

tokens = Table(
    "tokens",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("account_id", String(40), ForeignKey("accounts.id"), nullable=False),
    # sha256 of the token; the token itself is shown once and never stored.
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(16), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float, nullable=True),
    # Dashboard (migration "dashboard"): an optional label, and when it last authenticated
    # (written at most once a minute per token, never on every request).
    Column("name", String(100), nullable=True),
    Column("last_used_at", Float, nullable=True),
)

sessions = Table(
    "sessions",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("account_id", String(40), ForeignKey("accounts.id"), nullable=False),
    Column("name", String(200), nullable=True),
    Column("status", String(20), nullable=False),
    Column("provider", String(40), nullable=True),
    Column("compute_id", String(40), nullable=True),
    Column("harness", String(40), nullable=True),
    Column("runtime", String(20), nullable=False, default="shell"),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("closed_at", Float, nullable=True),
    Column("metrics", JSON, nullable=False),
    Column("routing", JSON, nullable=True),
    # Bytes of transcript content kept (the per-session budget trims past it; migration 2).
    Column("transcript_bytes", Integer, nullable=False, default=0, server_default="0"),
    Index("ix_sessions_account_created", "account_id", "created_at"),
)

transcript = Table(
    "transcript",
    metadata,
    Column("session_id", String(40), ForeignKey("sessions.id"), primary_key=True),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("ts", Float, nullable=False),
    Column("type", String(20), nullable=False),
    Column("content", JSON, nullable=False),
    # Bytes of ``content`` as JSON, and whether its output was trimmed (migration 2).
    Column("size", Integer, nullable=False, default=0, server_default="0"),
    Column("trimmed", Boolean, nullable=False, default=False, server_default="0"),
    Index("ix_transcript_untrimmed", "session_id", "trimmed", "seq"),
)

computes = Table(
    "computes",
    metadata,
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

provider_credentials = Table(
    "provider_credentials",
    metadata,
    Column("account_id", String(40), ForeignKey("accounts.id"), primary_key=True),
    Column("provider", String(40), primary_key=True),
    # Per field, a name in the secrets backend (refs) or a value sealed with the server key
    # (sealed: ciphertext). Never a plain value.
    Column("refs", JSON, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("sealed", JSON, nullable=True),
    Column("updated_at", Float, nullable=True),
    Column("last_used_at", Float, nullable=True),
    # issue 13 (llmmodels): the models an account's openai-compatible endpoint serves.
    Column("models", JSON, nullable=True),
)

# Measurements that feed the provider catalog (canary runs, real session metrics).
observations = Table(
    "observations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("provider", String(40), nullable=False),
    Column("metric", String(40), nullable=False),  # e.g. startup_ms, exec_ms
    Column("value", Float, nullable=False),
    Column("ok", Boolean, nullable=False, default=True),
    Column("source", String(20), nullable=False),  # canary | session
    Column("ts", Float, nullable=False),
    Index("ix_observations_provider_metric", "provider", "metric", "ts"),
)

# --- LLM spend and budgets (cerver/store/llm_spend.py, docs/llm.md) -----------------------
# Per-account limits; a null budget means "the deployment default" (CERVER_LLM_BUDGET_USD).
account_limits = Table(
    "account_limits",
    metadata,
    Column("account_id", String(40), ForeignKey("accounts.id"), primary_key=True),
    Column("llm_budget_usd", Float, nullable=True),
    Column("updated_at", Float, nullable=False),
)

# One row per upstream model call ("spent") and one per open reservation ("reserved", the
# worst case of a call in flight; replaced by its "spent" row when the call settles).
llm_spend = Table(
    "llm_spend",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("account_id", String(40), ForeignKey("accounts.id"), nullable=False),
    Column("session_id", String(40), nullable=True),
    Column("turn_id", String(40), nullable=True),
    Column("kind", String(10), nullable=False),  # reserved | spent
    Column("month", String(7), nullable=False),  # YYYY-MM (UTC)
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

# issue 13 (llmmodels): a session's own LLM budget (over its life, not per month). No
# foreign key to sessions: it is written beside the session, which is deleted without it.
session_limits = Table(
    "session_limits",
    metadata,
    Column("session_id", String(40), primary_key=True),
    Column("account_id", String(40), ForeignKey("accounts.id"), nullable=False),
    Column("llm_budget_usd", Float, nullable=True),
    Column("updated_at", Float, nullable=False),
)

# Dashboard sign-ins: a browser holds a random id in an HttpOnly cookie; only its sha256 is
# stored here, with the account it signed in as and its CSRF token. Never the API token.
browser_sessions = Table(
    "browser_sessions",
    metadata,
    Column("id_hash", String(64), primary_key=True),
    Column("account_id", String(40), ForeignKey("accounts.id"), nullable=False),
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
)

# --- relay (cerver/relay/): device-code logins and the credentials they mint ---------------
# A pending login (RFC 8628). Only hashes of the device code are kept; the user code is short
# and single-use, so it is kept as typed (it is worthless once approved or expired).
relay_logins = Table(
    "relay_logins",
    metadata,
    Column("device_hash", String(64), primary_key=True),
    Column("user_code", String(9), nullable=False, unique=True),
    Column("status", String(20), nullable=False),  # pending | approved | issued
    Column("account_id", String(40), ForeignKey("accounts.id"), nullable=True),
    Column("host", JSON, nullable=False),  # what the relay said about its machine
    Column("interval_s", Float, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("last_poll_at", Float, nullable=True),
    Column("compute_id", String(40), nullable=True),
)

# A relay credential: serves as exactly one compute (a ``computes`` row, provider "relay").
relay_credentials = Table(
    "relay_credentials",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("compute_id", String(40), nullable=False, unique=True),
    Column("account_id", String(40), ForeignKey("accounts.id"), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float, nullable=True),
)

__all__ = [
    "account_limits",
    "accounts",
    "browser_sessions",
    "computes",
    "llm_spend",
    "metadata",
    "observations",
    "provider_credentials",
    "relay_credentials",
    "relay_logins",
    "session_limits",
    "sessions",
    "tokens",
    "transcript",
]
