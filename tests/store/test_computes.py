"""Computes on both backends: the stored record round-trips, listing is newest first and
hides released computes unless asked, release clears the binding."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from cerver.store.accounts import Accounts
from cerver.store.computes import ComputeRow, Computes

pytestmark = pytest.mark.timeout(60)


def _row(account_id: str, compute_id: str, created_at: float, **values: object) -> ComputeRow:
    fields: dict[str, object] = {
        "id": compute_id,
        "account_id": account_id,
        "provider": "local",
        "status": "ready",
        "record": {"workspace": "/tmp/x", "isolation": "bwrap", "pids": [1, 2]},
        "session_id": None,
        "created_at": created_at,
        "released_at": None,
        "provision_time_ms": 12.5,
    }
    fields.update(values)
    return ComputeRow.model_validate(fields)


def test_insert_get_list_update_release(engine: Engine) -> None:
    accounts, computes = Accounts(engine), Computes(engine)
    alice = accounts.get_or_create("alice").id
    bob = accounts.get_or_create("bob").id
    old = _row(alice, "cmp_old", 100.0, session_id="sess_1")
    new = _row(alice, "cmp_new", 200.0, record=None, provision_time_ms=None)
    computes.insert(old)
    computes.insert(new)
    computes.insert(_row(bob, "cmp_bob", 150.0))

    assert computes.get("cmp_old") == old
    assert computes.get("cmp_old", account_id=alice) == old
    assert computes.get("cmp_old", account_id=bob) is None
    assert computes.get("cmp_missing") is None
    assert [c.id for c in computes.for_account(alice)] == ["cmp_new", "cmp_old"]

    computes.update("cmp_new", status="failed", record={"error": "boom"})
    got = computes.get("cmp_new")
    assert got is not None and got.status == "failed" and got.record == {"error": "boom"}

    computes.release("cmp_old")
    released = computes.get("cmp_old")
    assert released is not None
    assert released.status == "released" and released.session_id is None
    assert released.released_at is not None
    assert [c.id for c in computes.for_account(alice)] == ["cmp_new"]
    assert [c.id for c in computes.for_account(alice, include_released=True)] == [
        "cmp_new",
        "cmp_old",
    ]
