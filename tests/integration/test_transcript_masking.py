"""The transcript writer masks the account's provider credentials in what a run printed:
real Ray + Serve, an `e2b` session on the fake E2B with the account's key registered as a
reference into the `env` secrets backend. The key is learned when the session's adapter is
built with it (at use); the store never holds it."""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest

from cerver.store import Store
from tests.conftest import E2B_TEST_KEY_REF
from tests.fakes.e2b import FakeProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def masked_api(server: str, store: Store) -> Iterator[httpx.Client]:
    account = store.accounts.get_or_create("masking")
    store.credentials.put(account.id, "e2b", {"e2b_api_key": E2B_TEST_KEY_REF})
    token = store.accounts.issue_token(account.id)
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=server, headers=headers, timeout=60) as client:
        yield client


def _exec_entries(api: httpx.Client, sid: str) -> list[dict]:
    view = api.get(f"/v2/sessions/{sid}", params={"full": 1}).json()
    return [e["content"] for e in view["transcript"] if e["type"] == "exec"]


def test_credentials_printed_by_runs_are_masked_in_the_transcript(
    masked_api: httpx.Client, e2b_fake: FakeProcess, server_settings: object
) -> None:
    key = os.environ[E2B_TEST_KEY_REF]
    r = masked_api.post("/v2/sessions", json={"compute": {"provider": "e2b"}})
    assert r.status_code == 201, r.text
    sid = r.json()["session_id"]
    code = f"echo {key}; echo key={key} >&2; echo done"
    plain = masked_api.post(f"/v2/sessions/{sid}/run", json={"code": code})
    assert plain.status_code == 200, plain.text
    streamed = masked_api.post(f"/v2/sessions/{sid}/run", json={"code": code, "stream": True})
    assert streamed.status_code == 200, streamed.text
    entries = _exec_entries(masked_api, sid)
    assert [e.get("stream", False) for e in entries] == [False, True]
    for entry in entries:
        assert entry["code"] == "echo ***; echo key=*** >&2; echo done"
        assert entry["result"]["stdout"] == "***\ndone\n"
        assert entry["result"]["stderr"] == "key=***\n"
        assert entry["result"]["masked"] == 2
    assert key not in masked_api.get(f"/v2/sessions/{sid}", params={"full": 1}).text
    # The caller that ran the code gets its own output as it was.
    assert key in plain.json()["stdout"]
    masked_api.delete(f"/v2/sessions/{sid}")


def test_output_without_credentials_is_kept_as_is(masked_api: httpx.Client) -> None:
    r = masked_api.post("/v2/sessions", json={"compute": {"provider": "local"}})
    assert r.status_code == 201, r.text
    sid = r.json()["session_id"]
    masked_api.post(f"/v2/sessions/{sid}/run", json={"code": "echo plain output"})
    (entry,) = _exec_entries(masked_api, sid)
    assert entry["result"]["stdout"] == "plain output\n" and "masked" not in entry["result"]
    masked_api.delete(f"/v2/sessions/{sid}")
