"""Accounts and their bearer tokens. Tokens are shown once and stored only as sha256 hashes
(they are 256-bit random, so a fast hash is enough: there is nothing to brute-force)."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import Engine, insert, select, update

from cerver.store import schema
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
        with self.engine.begin() as conn:
            row = conn.execute(
                select(schema.accounts).where(schema.accounts.c.name == name)
            ).first()
            if row is not None:
                return Account(row.id, row.name)
            account = Account(new_id("acct"), name)
            conn.execute(insert(schema.accounts).values(id=account.id, name=name, created_at=now()))
            return account

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
