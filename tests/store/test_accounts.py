"""Accounts and tokens, on both backends: tokens authenticate, revoke, and are stored only as
their sha256."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import Engine, select

from cerver.store import schema
from cerver.store.accounts import TOKEN_PREFIX, Accounts

pytestmark = pytest.mark.timeout(60)


def test_get_or_create_is_idempotent(engine: Engine) -> None:
    accounts = Accounts(engine)
    assert accounts.count() == 0
    alice = accounts.get_or_create("alice")
    assert accounts.get_or_create("alice") == alice
    bob = accounts.get_or_create("bob")
    assert bob.id != alice.id and bob.name == "bob"
    assert accounts.count() == 2


def test_get_or_create_races_to_one_account(engine: Engine) -> None:
    accounts = Accounts(engine)
    with ThreadPoolExecutor(8) as pool:
        found = set(pool.map(lambda _: accounts.get_or_create("shared"), range(16)))
    assert len(found) == 1
    assert accounts.count() == 1


def test_token_authenticates_and_only_its_hash_is_stored(engine: Engine) -> None:
    accounts = Accounts(engine)
    alice = accounts.get_or_create("alice")
    token = accounts.issue_token(alice.id)
    assert token.startswith(TOKEN_PREFIX)
    assert accounts.authenticate(token) == alice
    assert accounts.authenticate(token + "x") is None

    with engine.connect() as conn:
        rows = conn.execute(select(schema.tokens)).mappings().all()
    assert len(rows) == 1
    assert rows[0]["token_hash"] == hashlib.sha256(token.encode()).hexdigest()
    assert rows[0]["prefix"] == token[:10]
    stored = " ".join(str(v) for v in rows[0].values())
    assert token not in stored and token[10:] not in stored


def test_revoke(engine: Engine) -> None:
    accounts = Accounts(engine)
    alice = accounts.get_or_create("alice")
    keep, drop = accounts.issue_token(alice.id), accounts.issue_token(alice.id)
    assert accounts.revoke(drop) is True
    assert accounts.authenticate(drop) is None
    assert accounts.authenticate(keep) == alice
    assert accounts.revoke("ck_unknown") is False
