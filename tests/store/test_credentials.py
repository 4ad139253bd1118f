"""Provider credentials on both backends: references (secret names) per account and
provider, replaced on put, also when puts race."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import Engine

from cerver.store.accounts import Accounts
from cerver.store.credentials import Credentials

pytestmark = pytest.mark.timeout(60)


def test_put_refs_providers(engine: Engine) -> None:
    accounts, credentials = Accounts(engine), Credentials(engine)
    alice = accounts.get_or_create("alice").id
    bob = accounts.get_or_create("bob").id
    assert credentials.refs(alice, "e2b") is None
    assert credentials.providers(alice) == []

    credentials.put(alice, "vercel", {"token": "VERCEL_TOKEN", "team": "VERCEL_TEAM"})
    credentials.put(alice, "e2b", {"api_key": "E2B_KEY"})
    credentials.put(bob, "e2b", {"api_key": "BOB_E2B_KEY"})
    assert credentials.refs(alice, "e2b") == {"api_key": "E2B_KEY"}
    assert credentials.providers(alice) == ["e2b", "vercel"]

    credentials.put(alice, "e2b", {"api_key": "E2B_KEY_2"})
    assert credentials.refs(alice, "e2b") == {"api_key": "E2B_KEY_2"}
    assert credentials.refs(bob, "e2b") == {"api_key": "BOB_E2B_KEY"}


def test_racing_puts_leave_one_of_them(engine: Engine) -> None:
    accounts, credentials = Accounts(engine), Credentials(engine)
    alice = accounts.get_or_create("alice").id
    refs = [{"api_key": f"KEY_{i}"} for i in range(12)]
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda r: credentials.put(alice, "e2b", r), refs))
    assert credentials.refs(alice, "e2b") in refs
    assert credentials.providers(alice) == ["e2b"]
