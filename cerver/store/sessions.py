"""Sessions and their transcripts.

Transcript entries are numbered per session by the store itself, in the same statement that
inserts them (``INSERT ... SELECT max(seq)+1 ... RETURNING seq``), so any writer (the session
actor, the ingress, another process) appends without a gap and without a read-modify-write
race. Appends to one session queue behind a lock: the append's first statement updates the
session row (its byte total), which on PostgreSQL locks that row, so under READ COMMITTED
the INSERT that follows sees the entry the previous holder committed; SQLite admits one
writer at a time anyway (and that UPDATE takes the write lock before anything is read).
The primary key (session_id, seq) stays the backstop: a lost race would be a retry, never a
duplicate.

Transcripts are bounded (docs/sessions.md, "Transcript budget"): each entry records its size
in bytes and the session its running total. An append that takes the total past the
writer's ``budget_bytes`` trims the oldest ``exec`` entries' output, in the same
transaction, until the total fits again; a trimmed entry keeps its place, its code (cut to
``TRIMMED_CODE_CHARS``) and its exit status, and says what was removed under ``trimmed``.
Reads page by bytes (``transcript_page``), so no request loads a whole transcript.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Connection, Engine, and_, func, insert, literal, select, update
from sqlalchemy.exc import IntegrityError

from cerver.store import schema
from cerver.store.ids import now

S, T = schema.sessions, schema.transcript

TRIM_BATCH = 50  # oldest exec entries looked at per round of trimming
TRIMMED_CODE_CHARS = 2000  # a trimmed entry keeps this much of its code
_OUTPUT_FIELDS = ("stdout", "stderr", "error", "traceback")


def entry_size(content: dict[str, Any]) -> int:
    """Bytes of an entry's content as stored (compact JSON, UTF-8)."""
    return len(json.dumps(content, separators=(",", ":"), ensure_ascii=False).encode())


def trimmed_exec(content: dict[str, Any], budget_bytes: int, at: float) -> dict[str, Any]:
    """An ``exec`` entry without its output: same keys, output fields emptied, code cut,
    and a ``trimmed`` note saying how many bytes of which field were removed and why."""
    out = dict(content)
    removed: dict[str, int] = {}
    result = out.get("result")
    if isinstance(result, dict):
        result = dict(result)
        for key in _OUTPUT_FIELDS:
            value = result.get(key)
            if isinstance(value, str) and value:
                removed[key] = len(value.encode())
                result[key] = ""
        out["result"] = result
    code = out.get("code")
    if isinstance(code, str) and len(code) > TRIMMED_CODE_CHARS:
        removed["code"] = len(code[TRIMMED_CODE_CHARS:].encode())
        out["code"] = code[:TRIMMED_CODE_CHARS]
    out["trimmed"] = {
        "reason": "the session's transcript passed its byte budget; the oldest output goes first",
        "budget_bytes": budget_bytes,
        "removed_bytes": removed,
        "at": at,
    }
    return out


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
        sizes = [entry_size(content) for _type, content in first_entries]
        with self.engine.begin() as conn:
            values = {**row.model_dump(), "transcript_bytes": sum(sizes)}
            conn.execute(insert(S).values(**values))
            for seq, ((type_, content), size) in enumerate(
                zip(first_entries, sizes, strict=True), start=1
            ):
                conn.execute(
                    insert(T).values(
                        session_id=row.id,
                        seq=seq,
                        ts=now(),
                        type=type_,
                        content=content,
                        size=size,
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
        budget_bytes: int | None = None,
    ) -> int:
        """Append one entry (and optionally update the session row in the same transaction),
        trimming the oldest exec output past ``budget_bytes``. Returns the entry's seq.
        Committed before this returns."""
        for _attempt in range(5):
            try:
                with self.engine.begin() as conn:
                    return self.append_in(
                        conn,
                        session_id,
                        type_,
                        content,
                        session_values=session_values,
                        budget_bytes=budget_bytes,
                    )
            except IntegrityError:
                continue
        raise RuntimeError(f"could not append to the transcript of {session_id}")

    def append_in(
        self,
        conn: Connection,
        session_id: str,
        type_: str,
        content: dict[str, Any],
        *,
        session_values: dict[str, Any] | None = None,
        budget_bytes: int | None = None,
    ) -> int:
        """``append`` inside the caller's transaction (e.g. with a budget settlement, so
        one commit holds both); committed when the caller commits."""
        size = entry_size(content)
        # The session row's UPDATE first: it is the queue (the row's lock; on SQLite the
        # write lock), one statement for the byte total and the caller's values.
        row_values: dict[str, Any] = {
            "transcript_bytes": S.c.transcript_bytes + size,
            **({"updated_at": now(), **session_values} if session_values else {}),
        }
        total = conn.execute(
            update(S)
            .where(S.c.id == session_id)
            .values(**row_values)
            .returning(S.c.transcript_bytes)
        ).scalar_one_or_none()
        if total is None:
            raise RuntimeError(
                f"could not append to the transcript of {session_id}: no such session"
            )
        next_seq = (
            select(func.coalesce(func.max(T.c.seq), 0) + 1)
            .where(T.c.session_id == session_id)
            .scalar_subquery()
        )
        seq = conn.execute(
            insert(T)
            .from_select(
                ["session_id", "seq", "ts", "type", "content", "size"],
                select(
                    literal(session_id),
                    next_seq,
                    literal(now()),
                    literal(type_),
                    literal(content, type_=T.c.content.type),
                    literal(size),
                ),
            )
            .returning(T.c.seq)
        ).scalar_one()
        if budget_bytes is not None and total > budget_bytes:
            self._trim(conn, session_id, total - budget_bytes, budget_bytes, seq)
        return int(seq)

    def _trim(
        self, conn: Connection, session_id: str, excess: int, budget_bytes: int, newest: int
    ) -> None:
        """Free at least ``excess`` bytes from the oldest untrimmed exec entries before
        ``newest`` (as many as there are), inside the caller's transaction."""
        freed = 0
        while freed < excess:
            rows = conn.execute(
                select(T.c.seq, T.c.content, T.c.size)
                .where(
                    T.c.session_id == session_id,
                    T.c.trimmed.is_(False),
                    T.c.type == "exec",
                    T.c.seq < newest,
                )
                .order_by(T.c.seq)
                .limit(TRIM_BATCH)
            ).all()
            if not rows:
                break
            for seq, content, size in rows:
                smaller = trimmed_exec(content, budget_bytes, now())
                new_size = entry_size(smaller)
                conn.execute(
                    update(T)
                    .where(T.c.session_id == session_id, T.c.seq == seq)
                    .values(content=smaller, size=new_size, trimmed=True)
                )
                freed += max(size - new_size, 0)
                if freed >= excess:
                    break
        if freed:
            conn.execute(
                update(S)
                .where(S.c.id == session_id)
                .values(transcript_bytes=S.c.transcript_bytes - freed)
            )

    def transcript_page(
        self,
        session_id: str,
        *,
        since: int | None = None,
        tail: int | None = None,
        max_entries: int,
        max_bytes: int,
    ) -> tuple[list[TranscriptEntry], bool]:
        """At most ``max_entries`` entries and ``max_bytes`` bytes of them (always at least
        one): after ``since`` (oldest first), or the last ``tail``. Returns the entries and
        whether entries after the last one returned were left out."""
        sizes = select(T.c.seq, T.c.size).where(T.c.session_id == session_id)
        if since is not None:
            sizes = sizes.where(T.c.seq > since)
        if tail is not None:
            sizes = sizes.order_by(T.c.seq.desc()).limit(min(tail, max_entries))
        else:
            sizes = sizes.order_by(T.c.seq).limit(max_entries + 1)
        with self.engine.connect() as conn:
            found = conn.execute(sizes).all()
            candidates = found if tail is not None else found[:max_entries]
            picked: list[int] = []
            total = 0
            for seq, size in candidates:
                if picked and total + size > max_bytes:
                    break
                picked.append(seq)
                total += size
            more = tail is None and len(picked) < len(found)
            if not picked:
                return [], more
            rows = conn.execute(
                select(T.c.seq, T.c.ts, T.c.type, T.c.content)
                .where(
                    T.c.session_id == session_id,
                    T.c.seq >= min(picked),
                    T.c.seq <= max(picked),
                )
                .order_by(T.c.seq)
            ).mappings()
            return [TranscriptEntry(**r) for r in rows], more

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

    def transcript_bytes(self, session_id: str) -> int:
        """Bytes the session's transcript holds now (what the budget counts)."""
        with self.engine.connect() as conn:
            found = conn.execute(
                select(S.c.transcript_bytes).where(S.c.id == session_id)
            ).scalar_one_or_none()
        return int(found or 0)

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
