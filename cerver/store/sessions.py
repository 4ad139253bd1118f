"""Sessions and their transcripts.

Transcript entries are numbered per session by the store itself, in the same statement that
inserts them (``INSERT ... SELECT max(seq)+1 ... RETURNING seq``), so any writer (the session
actor, the ingress, another process) appends without a gap and without a read-modify-write
race. Appends to one session queue behind a lock: on PostgreSQL the session row is locked
(``SELECT ... FOR UPDATE``), so under READ COMMITTED the INSERT that follows sees the entry
the previous holder committed; SQLite admits one writer at a time anyway (and the INSERT takes
the write lock before it reads). The primary key (session_id, seq) stays the backstop: a lost
race would be a retry, never a duplicate.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from sqlalchemy import Engine, and_, func, insert, literal, select, update
from sqlalchemy.exc import IntegrityError

from cerver.store import schema
from cerver.store.ids import now

S, T = schema.sessions, schema.transcript


class SessionRow(BaseModel):
    id: str
    account_id: str
    name: str | None
    status: str
    provider: str | None
    compute_id: str | None
    harness: str | None
    runtime: str
    created_at: float
    updated_at: float
    closed_at: float | None
    metrics: dict[str, Any]
    routing: dict[str, Any] | None


class TranscriptEntry(BaseModel):
    seq: int
    ts: float
    type: str
    content: dict[str, Any]


class Sessions:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(self, row: SessionRow, first_entries: list[tuple[str, dict[str, Any]]]) -> None:
        """Insert the session and its opening transcript entries in one transaction."""
        with self.engine.begin() as conn:
            conn.execute(insert(S).values(**row.model_dump()))
            for seq, (type_, content) in enumerate(first_entries, start=1):
                conn.execute(
                    insert(T).values(
                        session_id=row.id, seq=seq, ts=now(), type=type_, content=content
                    )
                )

    def get(self, session_id: str, account_id: str | None = None) -> SessionRow | None:
        query = select(S).where(S.c.id == session_id)
        if account_id is not None:
            query = query.where(S.c.account_id == account_id)
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return SessionRow(**row) if row is not None else None

    def page(
        self,
        account_id: str,
        *,
        limit: int,
        name: str | None = None,
        before: tuple[float, str] | None = None,
        name_contains: str | None = None,
        status: str | None = None,
        provider: str | None = None,
    ) -> list[SessionRow]:
        """Newest first. ``name`` matches exactly (the API's filter); ``name_contains`` is
        the dashboard's search (case-insensitive substring, ``%`` and ``_`` taken literally)."""
        query = select(S).where(S.c.account_id == account_id)
        if name is not None:
            query = query.where(S.c.name == name)
        if name_contains:
            query = query.where(S.c.name.icontains(name_contains, autoescape=True))
        if status is not None:
            query = query.where(S.c.status == status)
        if provider is not None:
            query = query.where(S.c.provider == provider)
        if before is not None:
            created, sid = before
            query = query.where(
                (S.c.created_at < created) | and_(S.c.created_at == created, S.c.id < sid)
            )
        query = query.order_by(S.c.created_at.desc(), S.c.id.desc()).limit(limit)
        with self.engine.connect() as conn:
            return [SessionRow(**r) for r in conn.execute(query).mappings()]

    def count_open(self, account_id: str) -> int:
        """Sessions of this account not closed (the per-account cap counts these)."""
        query = (
            select(func.count())
            .select_from(S)
            .where(S.c.account_id == account_id, S.c.status != "closed")
        )
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def update(self, session_id: str, **values: Any) -> None:
        values["updated_at"] = now()
        with self.engine.begin() as conn:
            conn.execute(update(S).where(S.c.id == session_id).values(**values))

    def append(
        self,
        session_id: str,
        type_: str,
        content: dict[str, Any],
        *,
        session_values: dict[str, Any] | None = None,
    ) -> int:
        """Append one entry (and optionally update the session row in the same transaction).
        Returns the entry's seq. Committed before this returns."""
        for _attempt in range(5):
            try:
                with self.engine.begin() as conn:
                    locked = conn.execute(
                        select(S.c.id).where(S.c.id == session_id).with_for_update()
                    ).first()
                    if locked is None:
                        raise RuntimeError(
                            f"could not append to the transcript of {session_id}: no such session"
                        )
                    if session_values:
                        conn.execute(
                            update(S)
                            .where(S.c.id == session_id)
                            .values(updated_at=now(), **session_values)
                        )
                    next_seq = (
                        select(func.coalesce(func.max(T.c.seq), 0) + 1)
                        .where(T.c.session_id == session_id)
                        .scalar_subquery()
                    )
                    seq = conn.execute(
                        insert(T)
                        .from_select(
                            ["session_id", "seq", "ts", "type", "content"],
                            select(
                                literal(session_id),
                                next_seq,
                                literal(now()),
                                literal(type_),
                                literal(content, type_=T.c.content.type),
                            ),
                        )
                        .returning(T.c.seq)
                    ).scalar_one()
                    return int(seq)
            except IntegrityError:
                continue
        raise RuntimeError(f"could not append to the transcript of {session_id}")

    def transcript(
        self,
        session_id: str,
        *,
        tail: int | None = None,
        since: int | None = None,
        limit: int | None = None,
    ) -> list[TranscriptEntry]:
        query = select(T.c.seq, T.c.ts, T.c.type, T.c.content).where(T.c.session_id == session_id)
        if since is not None:
            query = query.where(T.c.seq > since)
        if tail is not None:
            query = query.order_by(T.c.seq.desc()).limit(tail)
        else:
            query = query.order_by(T.c.seq)
            if limit is not None:
                query = query.limit(limit)
        with self.engine.connect() as conn:
            rows = [TranscriptEntry(**r) for r in conn.execute(query).mappings()]
        return sorted(rows, key=lambda e: e.seq)

    def transcript_length(self, session_id: str) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count()).select_from(T).where(T.c.session_id == session_id)
                ).scalar_one()
            )

    def delete(self, session_id: str) -> None:
        """Remove a session that never became usable (a failed create), with its entries."""
        from sqlalchemy import delete

        with self.engine.begin() as conn:
            conn.execute(delete(T).where(T.c.session_id == session_id))
            conn.execute(delete(S).where(S.c.id == session_id))
