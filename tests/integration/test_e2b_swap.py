"""The docs' compute swap, over HTTP, onto E2B and back: real Ray + Serve, the shared
server's `e2b` provider pointed at the fake E2B (tests/fakes/e2b.py), the official SDK
in between. The account's E2B key is a reference into the `env` secrets backend."""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest

from cerver.store import Store
from tests.conftest import E2B_REVOKED_KEY_REF, E2B_TEST_KEY_REF
from tests.fakes.e2b import FakeProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _client(server: str, store: Store, name: str, key_ref: str) -> httpx.Client:
    """An account of its own (so others' provider lists stay as they are), with e2b
    credentials registered as a reference to a secret name."""
    account = store.accounts.get_or_create(name)
    store.credentials.put(account.id, "e2b", {"e2b_api_key": key_ref})
    token = store.accounts.issue_token(account.id)
    return httpx.Client(base_url=server, headers={"Authorization": f"Bearer {token}"}, timeout=60)


@pytest.fixture(scope="module")
def e2b_api(server: str, store: Store) -> Iterator[httpx.Client]:
    with _client(server, store, "e2b-swapper", E2B_TEST_KEY_REF) as client:
        yield client


def _local_session(api: httpx.Client) -> str:
    r = api.post("/v2/sessions", json={"session_name": "swap", "compute": {"provider": "local"}})
    assert r.status_code == 201, r.text
    return str(r.json()["session_id"])


def _transcript(api: httpx.Client, sid: str) -> list[dict]:
    return list(api.get(f"/v2/sessions/{sid}", params={"full": 1}).json()["transcript"])


def test_swap_to_e2b_provisions_there_with_the_account_key(
    e2b_api: httpx.Client, e2b_fake: FakeProcess
) -> None:
    sid = _local_session(e2b_api)
    r = e2b_api.post(f"/v2/sessions/{sid}/compute", json={"compute": {"provider": "e2b"}})
    assert r.status_code == 200, r.text
    view = r.json()
    assert view["provider"] == "e2b"
    creates = [
        q for q in e2b_fake.received() if q["method"] == "POST" and q["path"] == "/v2/sandboxes"
    ]
    assert creates[-1]["api_key"] == os.environ[E2B_TEST_KEY_REF]  # resolved from the backend
    attached = [e for e in _transcript(e2b_api, sid) if e["type"] == "compute"][-1]["content"]
    assert attached["provider"] == "e2b" and attached["isolation"] == "firecracker"
    assert attached["sandbox_id"] == view["sandbox_id"]
    computes = e2b_api.get("/v2/computes").json()
    assert view["compute_id"] in str(computes)


def test_a_key_e2b_refuses_is_502_and_the_session_stays_on_local(server: str, store: Store) -> None:
    with _client(server, store, "e2b-revoked", E2B_REVOKED_KEY_REF) as api:
        sid = _local_session(api)
        r = api.post(f"/v2/sessions/{sid}/compute", json={"compute": {"provider": "e2b"}})
        assert r.status_code == 502, r.text
        error = r.json()["error"]
        assert error["code"] == "provider_auth_failed" and "Invalid API key" in error["message"]
        revoked = os.environ[E2B_REVOKED_KEY_REF]
        assert revoked not in r.text and revoked not in str(_transcript(api, sid))
        out = api.post(f"/v2/sessions/{sid}/run", json={"code": "echo still here"}).json()
        assert out["stdout"] == "still here\n" and out["provider"] == "local"


def test_an_e2b_rate_limit_is_429_with_retry_after(
    e2b_api: httpx.Client, e2b_fake: FakeProcess
) -> None:
    sid = _local_session(e2b_api)
    e2b_fake.rate_limit(count=4, retry_after=0)  # all of the SDK's 1 + 3 tries
    try:
        r = e2b_api.post(f"/v2/sessions/{sid}/compute", json={"compute": {"provider": "e2b"}})
    finally:
        e2b_fake.rate_limit(count=0)
    assert r.status_code == 429, r.text
    assert r.json()["error"]["code"] == "rate_limited" and int(r.headers["Retry-After"]) > 0
    assert e2b_api.get(f"/v2/sessions/{sid}").json()["provider"] == "local"


def test_swap_local_to_e2b_and_back_keeps_the_transcript(
    e2b_api: httpx.Client, e2b_fake: FakeProcess
) -> None:
    api = e2b_api
    r = api.post("/v2/sessions", json={"session_name": "swap", "compute": {"provider": "local"}})
    assert r.status_code == 201, r.text
    sid, local_compute = r.json()["session_id"], r.json()["compute_id"]
    assert api.post(f"/v2/sessions/{sid}/run", json={"code": "echo on local"}).json()["stdout"]

    # The docs' call, verbatim body.
    r = api.post(f"/v2/sessions/{sid}/compute", json={"compute": {"provider": "e2b"}})
    assert r.status_code == 200, r.text
    on_e2b = r.json()
    assert on_e2b["provider"] == "e2b" and on_e2b["compute_id"] != local_compute
    e2b_sandbox = on_e2b["sandbox_id"]

    out = api.post(f"/v2/sessions/{sid}/run", json={"code": "total = 20 + 1", "language": "python"})
    assert out.status_code == 200, out.text
    out = api.post(
        f"/v2/sessions/{sid}/run", json={"code": "print(total * 2)", "language": "python"}
    ).json()
    assert out["stdout"] == "42\n" and out["compute_id"] == on_e2b["compute_id"]
    shell = api.post(f"/v2/sessions/{sid}/run", json={"code": "echo on e2b"}).json()
    assert shell["stdout"] == "on e2b\n" and shell["exit_code"] == 0

    # E2B received the account's key (resolved from the secrets backend) on the create,
    # and the runs reached the sandbox E2B made.
    received = e2b_fake.received()
    creates = [q for q in received if q["method"] == "POST" and q["path"] == "/v2/sandboxes"]
    assert creates and creates[-1]["api_key"] == os.environ[E2B_TEST_KEY_REF]
    runs = [q for q in received if q["path"] in ("/execute", "/process.Process/Start")]
    assert {q["sandbox_id"] for q in runs} >= {e2b_sandbox}

    # And back.
    r = api.post(f"/v2/sessions/{sid}/compute", json={"compute": {"provider": "local"}})
    assert r.status_code == 200, r.text
    assert r.json()["provider"] == "local"
    back = api.post(f"/v2/sessions/{sid}/run", json={"code": "echo home"}).json()
    assert back["stdout"] == "home\n"

    entries = api.get(f"/v2/sessions/{sid}", params={"full": 1}).json()["transcript"]
    codes = [e["content"].get("code") for e in entries if e["type"] == "exec"]
    assert codes == [
        "echo on local", "total = 20 + 1", "print(total * 2)", "echo on e2b", "echo home",
    ]  # fmt: skip
    swaps = [e for e in entries if e["type"] == "compute" and e["content"]["reason"] == "swap"]
    assert len(swaps) == 2
    assert api.delete(f"/v2/sessions/{sid}").status_code == 200
    # Swapping away (or closing) released the E2B sandbox at E2B.
    kills = [q for q in e2b_fake.received() if q["method"] == "DELETE"]
    assert any(q["path"] == f"/sandboxes/{e2b_sandbox}" for q in kills)
    # ... with the account's key: the release used the session's adapter handle, built with
    # the account's credentials (issue 9), not a credential-less one.
    key = os.environ[E2B_TEST_KEY_REF]
    assert all(q["api_key"] == key for q in kills if q["path"] == f"/sandboxes/{e2b_sandbox}")
