"""Relay logins and credentials in the store (RFC 8628 rules), on a real SQLite file."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import select

from cerver.errors import BadRequest
from cerver.store import Store, schema
from cerver.store.relay import GrantError

HOST = {"hostname": "box", "os": "Linux"}


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.open(f"sqlite:///{tmp_path / 'c.db'}")


def _code(store: Store, device_code: str) -> str:
    with pytest.raises(GrantError) as err:
        store.relays.poll(device_code)
    return err.value.code


def test_a_login_is_pending_then_issues_one_credential_for_one_compute(store: Store) -> None:
    acct = store.accounts.get_or_create("a")
    login = store.relays.start_login(HOST, interval_s=0.05, ttl_s=60)
    assert _code(store, login.device_code) == "authorization_pending"
    compute_id = store.relays.approve(login.user_code.lower().replace("-", " "), acct.id)
    row = store.computes.get(compute_id, acct.id)
    assert row is not None and row.provider == "relay" and row.status == "offline"
    assert row.record == {"host": HOST, "last_seen": None}
    time.sleep(0.06)
    issued = store.relays.poll(login.device_code)
    assert issued.compute_id == compute_id and issued.credential.startswith("crl_")
    assert _code(store, login.device_code) == "invalid_grant"  # exchanged once only
    found = store.relays.authenticate(issued.credential)
    assert found is not None and found.compute_id == compute_id
    # Only hashes are stored: neither the device code nor the credential is in the tables.
    with store.computes.engine.connect() as conn:
        stored = str(conn.execute(select(schema.relay_logins)).all())
        stored += str(conn.execute(select(schema.relay_credentials)).all())
    assert login.device_code not in stored and issued.credential not in stored
    # The account's own token machinery does not accept it.
    assert store.accounts.authenticate(issued.credential) is None


def test_polling_faster_than_the_interval_slows_down_by_five_seconds(store: Store) -> None:
    login = store.relays.start_login(HOST, interval_s=1.0, ttl_s=60)
    assert _code(store, login.device_code) == "authorization_pending"
    with pytest.raises(GrantError) as err:
        store.relays.poll(login.device_code)
    assert err.value.code == "slow_down" and err.value.details == {"interval": 6.0}
    assert err.value.status == 400
    assert _code(store, login.device_code) == "slow_down"  # still too fast for 6 s


def test_expired_wrong_and_reused_codes_say_what_to_do(store: Store) -> None:
    acct = store.accounts.get_or_create("a")
    login = store.relays.start_login(HOST, interval_s=0.01, ttl_s=0.05)
    time.sleep(0.1)
    with pytest.raises(BadRequest, match="expired; restart 'cerver relay'"):
        store.relays.approve(login.user_code, acct.id)
    assert _code(store, login.device_code) == "expired_token"
    with pytest.raises(BadRequest, match="check the code"):
        store.relays.approve("ZZZZ-ZZZZ", acct.id)
    fresh = store.relays.start_login(HOST, interval_s=0.01, ttl_s=60)
    store.relays.approve(fresh.user_code, acct.id)
    with pytest.raises(BadRequest, match="already used"):
        store.relays.approve(fresh.user_code, acct.id)


def test_revoking_a_credential_releases_its_compute(store: Store) -> None:
    acct = store.accounts.get_or_create("a")
    login = store.relays.start_login(HOST, interval_s=0.01, ttl_s=60)
    compute_id = store.relays.approve(login.user_code, acct.id)
    time.sleep(0.02)
    issued = store.relays.poll(login.device_code)
    assert store.computes.host_providers(acct.id) == {"relay"}
    assert store.relays.revoke(issued.credential) == compute_id
    assert store.relays.authenticate(issued.credential) is None
    assert store.relays.revoke(issued.credential) is None
    row = store.computes.get(compute_id)
    assert row is not None and row.status == "released"
    assert store.computes.host_providers(acct.id) == set()
