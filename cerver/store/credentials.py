"""Provider credentials of an account: per field, either a *reference* (a name in the
secrets backend, ``refs``) or a value *sealed* with the server key (``sealed``, ciphertext
only). Nothing here sees a plain value; sealing and resolving live in
``cerver.provider_credentials``."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Engine, delete, select, update

from cerver.store import schema
from cerver.store.db import insert_or
from cerver.store.ids import now

P = schema.provider_credentials


class CredentialRow(BaseModel):
    """One registration. ``sealed`` holds ciphertexts, never values."""

    model_config = ConfigDict(frozen=True)

    account_id: str
    provider: str
    refs: dict[str, str]
    sealed: dict[str, str]
    created_at: float
    updated_at: float
    last_used_at: float | None
    # The models an openai-compatible endpoint serves (empty: none declared).
    models: list[str] = []

    @property
    def field_names(self) -> list[str]:
        return sorted({*self.refs, *self.sealed})

    def __repr__(self) -> str:  # ciphertexts are not secrets, but keep logs short
        return f"CredentialRow({self.account_id}, {self.provider}, fields={self.field_names})"


def _row(r: object) -> CredentialRow:
    m = r._mapping  # type: ignore[attr-defined]
    return CredentialRow(
        account_id=m["account_id"],
        provider=m["provider"],
        refs=dict(m["refs"] or {}),
        sealed=dict(m["sealed"] or {}),
        created_at=m["created_at"],
        updated_at=m["updated_at"] or m["created_at"],
        last_used_at=m["last_used_at"],
        models=list(m["models"] or []),
    )


class Credentials:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def put(
        self,
        account_id: str,
        provider: str,
        refs: dict[str, str],
        sealed: dict[str, str] | None = None,
        models: list[str] | None = None,
    ) -> None:
        """Store (or replace: a rotation) one registration; an upsert, so racing puts leave
        one of them. ``created_at`` is kept across rotations, ``updated_at`` is not."""
        stamp = now()
        with self.engine.begin() as conn:
            stmt = insert_or(conn, P).values(
                account_id=account_id,
                provider=provider,
                refs=refs,
                sealed=sealed or {},
                models=models or None,
                created_at=stamp,
                updated_at=stamp,
            )
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["account_id", "provider"],
                    set_={
                        "refs": stmt.excluded.refs,
                        "sealed": stmt.excluded.sealed,
                        "models": stmt.excluded.models,
                        "updated_at": stmt.excluded.updated_at,
                    },
                )
            )

    def get(self, account_id: str, provider: str) -> CredentialRow | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(P).where(P.c.account_id == account_id, P.c.provider == provider)
            ).first()
        return _row(row) if row is not None else None

    def refs(self, account_id: str, provider: str) -> dict[str, str] | None:
        found = self.get(account_id, provider)
        return found.refs if found is not None else None

    def for_account(self, account_id: str) -> list[CredentialRow]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(P).where(P.c.account_id == account_id).order_by(P.c.provider)
            ).all()
        return [_row(r) for r in rows]

    def providers(self, account_id: str) -> list[str]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(P.c.provider).where(P.c.account_id == account_id))
            return sorted(r.provider for r in rows)

    def touch(self, account_id: str, provider: str) -> None:
        """Record a use (``last_used_at``)."""
        with self.engine.begin() as conn:
            conn.execute(
                update(P)
                .where(P.c.account_id == account_id, P.c.provider == provider)
                .values(last_used_at=now())
            )

    def delete(self, account_id: str, provider: str) -> bool:
        with self.engine.begin() as conn:
            result = conn.execute(
                delete(P).where(P.c.account_id == account_id, P.c.provider == provider)
            )
        return bool(result.rowcount)
