"""Accounts and their bearer tokens. Tokens are shown once and stored only as sha256 hashes
(they are 256-bit random, so a fast hash is enough: there is nothing to brute-force)."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import Engine, insert, select, update

from cerver.store import schema
from cerver.store.db import insert_or
from cerver.store.ids import new_id, now

TOKEN_PREFIX = "ck_"


# How stale a token's ``last_used_at`` may get before an authentication writes it again: a
# burst of calls costs no writes, and the dashboard's "last used" is right to the minute.
LAST_USED_RESOLUTION_S = 60.0


@dataclass(frozen=True)
class Account:
    id: str
    name: str


@dataclass(frozen=True)
class TokenInfo:
    """What may be shown of a token after it was issued: never the token or its hash."""

    id: str
    name: str | None
    prefix: str
    created_at: float
    last_used_at: float | None
    revoked_at: float | None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Accounts:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def count(self) -> int:
        with self.engine.connect() as conn:
            return len(conn.execute(select(schema.accounts.c.id)).all())

    def get_or_create(self, name: str) -> Account:
        query = select(schema.accounts).where(schema.accounts.c.name == name)
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None:
            # Insert-if-absent is atomic: of two processes creating the same name, one
            # inserts, the other waits for it and then reads the winner's row.
            with self.engine.begin() as conn:
                conn.execute(
                    insert_or(conn, schema.accounts)
                    .values(id=new_id("acct"), name=name, created_at=now())
                    .on_conflict_do_nothing(index_elements=["name"])
                )
                row = conn.execute(query).one()
        return Account(row.id, row.name)

    def issue_token(self, account_id: str, name: str | None = None) -> str:
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self.engine.begin() as conn:
            conn.execute(
                insert(schema.tokens).values(
                    id=new_id("tok"),
                    account_id=account_id,
                    token_hash=hash_token(token),
                    prefix=token[:10],
                    created_at=now(),
                    name=name,
                )
            )
        return token

    def authenticate(self, token: str) -> Account | None:
        t, a = schema.tokens, schema.accounts
        key = hash_token(token)
        with self.engine.connect() as conn:
            row = conn.execute(
                select(a.c.id, a.c.name, t.c.last_used_at)
                .join(t, t.c.account_id == a.c.id)
                .where(t.c.token_hash == key, t.c.revoked_at.is_(None))
            ).first()
        if row is None:
            return None
        at = now()
        if row.last_used_at is None or at - row.last_used_at > LAST_USED_RESOLUTION_S:
            with self.engine.begin() as conn:
                conn.execute(update(t).where(t.c.token_hash == key).values(last_used_at=at))
        return Account(row.id, row.name)

    def tokens(self, account_id: str) -> list[TokenInfo]:
        """The account's tokens, newest first, revoked ones included (they say so)."""
        t = schema.tokens
        query = (
            select(t.c.id, t.c.name, t.c.prefix, t.c.created_at, t.c.last_used_at, t.c.revoked_at)
            .where(t.c.account_id == account_id)
            .order_by(t.c.created_at.desc())
        )
        with self.engine.connect() as conn:
            return [TokenInfo(**r) for r in conn.execute(query).mappings()]

    def revoke_id(self, account_id: str, token_id: str) -> bool:
        """Revoke one of the account's tokens by id; False if it is not the account's or
        was already revoked."""
        t = schema.tokens
        with self.engine.begin() as conn:
            res = conn.execute(
                update(t)
                .where(t.c.id == token_id, t.c.account_id == account_id, t.c.revoked_at.is_(None))
                .values(revoked_at=now())
            )
        return bool(res.rowcount)

    def revoke(self, token: str) -> bool:
        with self.engine.begin() as conn:
            res = conn.execute(
                update(schema.tokens)
                .where(schema.tokens.c.token_hash == hash_token(token))
                .values(revoked_at=now())
            )
        return bool(res.rowcount)
