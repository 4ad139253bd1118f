"""A create says where its time went (issue 16, burst): POST /v2/sessions reports the
admission, the compute choice, the store, the host placement, the hop, and the host's own
phases in Server-Timing, and what it acknowledged is in the store: the session row names
its compute, and its transcript says so, written in one transaction."""

from __future__ import annotations

import httpx
import pytest

from cerver.serve_app.timing import parse as parse_server_timing

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

CREATE_PHASES = {
    "auth", "admit", "choose", "store", "route", "actor", "load", "provision", "adapter",
    "commit", "view", "release", "app",
}  # fmt: skip


def test_a_create_says_where_its_time_went(api: httpx.Client, store) -> None:  # type: ignore[no-untyped-def]
    r = api.post("/v2/sessions", json={"compute": {"provider": "local"}})
    assert r.status_code == 201, r.text
    body = r.json()
    phases = parse_server_timing(r.headers["server-timing"])
    assert set(phases) == CREATE_PHASES, phases
    assert all(v >= 0 for k, v in phases.items() if k != "actor"), phases
    assert phases["adapter"] <= phases["provision"]  # the provider's part of provisioning
    inside = sum(v for k, v in phases.items() if k not in ("app", "adapter", "actor"))
    assert inside <= phases["app"] + 1.0
    # What the answer says is what the store has, the row and its entry alike.
    row = store.sessions.get(body["session_id"])
    assert row is not None and row.status == "ready" and row.compute_id
    entries, _more = store.sessions.transcript_page(
        body["session_id"], since=0, max_entries=10, max_bytes=1 << 20
    )
    attached = [e for e in entries if e.content.get("event") == "attached"]
    assert len(attached) == 1 and attached[0].content["compute_id"] == row.compute_id
    assert row.metrics["provision_time_ms"] == attached[0].content["provision_time_ms"]
    api.delete(f"/v2/sessions/{body['session_id']}")


def test_a_transcript_only_create_has_no_attach_phases(api: httpx.Client) -> None:
    r = api.post("/v2/sessions", json={"compute": None})
    assert r.status_code == 201, r.text
    phases = parse_server_timing(r.headers["server-timing"])
    assert {"admit", "choose", "store", "view", "app"} <= set(phases)
    assert not {"route", "provision", "commit"} & set(phases)
    api.delete(f"/v2/sessions/{r.json()['session_id']}")
