"""Provider credentials of an account, stored as *references* (names in the secrets backend),
never as values. Resolution happens at provisioning time, in the process that provisions."""

from __future__ import annotations

from sqlalchemy import Engine, select

from cerver.store import schema
from cerver.store.db import insert_or
from cerver.store.ids import now

P = schema.provider_credentials


class Credentials:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def put(self, account_id: str, provider: str, refs: dict[str, str]) -> None:
        """Store (or replace) the references; an upsert, so racing puts leave one of them."""
        with self.engine.begin() as conn:
            stmt = insert_or(conn, P).values(
                account_id=account_id, provider=provider, refs=refs, created_at=now()
            )
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["account_id", "provider"],
                    set_={"refs": stmt.excluded.refs, "created_at": stmt.excluded.created_at},
                )
            )

    def refs(self, account_id: str, provider: str) -> dict[str, str] | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(P.c.refs).where(P.c.account_id == account_id, P.c.provider == provider)
            ).first()
        return dict(row.refs) if row is not None else None

    def providers(self, account_id: str) -> list[str]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(P.c.provider).where(P.c.account_id == account_id))
            return sorted(r.provider for r in rows)
