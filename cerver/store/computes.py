"""Computes: one row per provisioned sandbox (or relay host), owned by one account."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from sqlalchemy import Engine, func, insert, select, update

from cerver.store import schema
from cerver.store.ids import now

C = schema.computes
# Statuses of a compute that is a host (a relay machine) rather than one sandbox.
HOST_STATUSES = ("online", "offline")


class ComputeRow(BaseModel):
    id: str
    account_id: str
    provider: str
    status: str  # provisioning | ready | released | failed | lost; hosts: online | offline
    record: dict[str, Any] | None
    session_id: str | None
    created_at: float
    released_at: float | None
    provision_time_ms: float | None


class Computes:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def insert(self, row: ComputeRow) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(C).values(**row.model_dump()))

    def get(self, compute_id: str, account_id: str | None = None) -> ComputeRow | None:
        query = select(C).where(C.c.id == compute_id)
        if account_id is not None:
            query = query.where(C.c.account_id == account_id)
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return ComputeRow(**row) if row is not None else None

    def find(self, ref: str, account_id: str) -> ComputeRow | None:
        """The account's compute named by ``ref``: its compute id (``cmp_...``), or the id of
        its sandbox at the provider (``sbx_...``, what a session shows as ``sandbox_id``).
        The second is a JSON lookup within the account's computes (indexed by account)."""
        found = self.get(ref, account_id)
        if found is not None:
            return found
        query = (
            select(C)
            .where(C.c.account_id == account_id, C.c.record["sandbox_id"].as_string() == ref)
            .order_by(C.c.created_at.desc())
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return ComputeRow(**row) if row is not None else None

    def for_account(self, account_id: str, *, include_released: bool = False) -> list[ComputeRow]:
        query = select(C).where(C.c.account_id == account_id)
        if not include_released:
            query = query.where(C.c.status != "released")
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(C.c.created_at.desc())).mappings()
            return [ComputeRow(**r) for r in rows]

    def count_live(self, account_id: str, *, exclude: str | None = None) -> int:
        """Computes of this account not released (the per-account cap counts these)."""
        query = (
            select(func.count())
            .select_from(C)
            .where(C.c.account_id == account_id, C.c.status.not_in(("released", "failed")))
        )
        if exclude is not None:
            query = query.where(C.c.id != exclude)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def host_providers(self, account_id: str) -> set[str]:
        """Providers of which the account has a host compute (``online``/``offline``: relay
        machines), so it can execute there."""
        query = select(C.c.provider).where(
            C.c.account_id == account_id, C.c.status.in_(HOST_STATUSES)
        )
        with self.engine.connect() as conn:
            return {r.provider for r in conn.execute(query.distinct())}

    def update(self, compute_id: str, **values: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(C).where(C.c.id == compute_id).values(**values))

    def release(self, compute_id: str) -> None:
        self.update(compute_id, status="released", released_at=now(), session_id=None)
