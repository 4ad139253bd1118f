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


@dataclass(frozen=True)
class Account:
    id: str
    name: str


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

    def issue_token(self, account_id: str) -> str:
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self.engine.begin() as conn:
            conn.execute(
                insert(schema.tokens).values(
                    id=new_id("tok"),
                    account_id=account_id,
                    token_hash=hash_token(token),
                    prefix=token[:10],
                    created_at=now(),
                )
            )
        return token

    def authenticate(self, token: str) -> Account | None:
        t, a = schema.tokens, schema.accounts
        with self.engine.connect() as conn:
            row = conn.execute(
                select(a.c.id, a.c.name)
                .join(t, t.c.account_id == a.c.id)
                .where(t.c.token_hash == hash_token(token), t.c.revoked_at.is_(None))
            ).first()
        return Account(row.id, row.name) if row is not None else None

    def revoke(self, token: str) -> bool:
        with self.engine.begin() as conn:
            res = conn.execute(
                update(schema.tokens)
                .where(schema.tokens.c.token_hash == hash_token(token))
                .values(revoked_at=now())
            )
        return bool(res.rowcount)
