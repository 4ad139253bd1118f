"""Losing a node: a session whose host actor, or whose `ray` sandbox, lived there keeps
working on the next call, and nothing acknowledged is lost."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
import ray

from tests.cluster.conftest import NAMESPACE, Nodes

pytestmark = pytest.mark.timeout(240)


def run_until_ok(capi: httpx.Client, sid: str, code: str, within_s: float = 120) -> httpx.Response:
    """Retry while the session layer recovers; 503 is its documented 'retry' answer."""
    deadline = time.monotonic() + within_s
    while True:
        r = capi.post(f"/v2/sessions/{sid}/run", json={"code": code})
        if r.status_code == 200 or time.monotonic() > deadline:
            return r
        assert r.status_code in (502, 503), r.text
        time.sleep(1.0)


def transcript(capi: httpx.Client, sid: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = capi.get(f"/v2/sessions/{sid}", params={"full": 1}).json()[
        "transcript"
    ]
    seqs = [e["seq"] for e in entries]
    assert seqs == list(range(1, len(seqs) + 1))  # no gap
    return entries


def host_node(sid: str) -> str | None:
    """The node of the actor hosting session ``sid``: the actor named ``sid``, or a pooled
    host whose ``session()`` / ``sessions()`` answer names it. Read from the GCS actor
    table (the state API would need the dashboard)."""
    table: dict[str, dict[str, Any]] = ray._private.state.actors()
    for info in table.values():
        if info["State"] != "ALIVE" or "Session" not in info["ActorClassName"]:
            continue
        if info["Name"] == sid:
            return str(info["Address"]["NodeID"])
        try:
            handle = ray.get_actor(info["Name"], namespace=NAMESPACE)
            # A host serving one session (`session()`) or several (`sessions()`).
            method = getattr(handle, "sessions", None) or handle.session
            serves = ray.get(method.remote(), timeout=10)
        except (ValueError, AttributeError, ray.exceptions.RayError):
            continue
        if sid == serves or (isinstance(serves, list) and sid in serves):
            return str(info["Address"]["NodeID"])
    return None


def session_on_a_worker(capi: httpx.Client, nodes: Nodes) -> tuple[str, str]:
    """A session whose host actor runs on a worker node (the head cannot be removed)."""
    for _ in range(6):
        r = capi.post("/v2/sessions", json={"compute": {"provider": "local"}})
        assert r.status_code == 201, r.text
        sid = r.json()["session_id"]
        role = nodes.role_of(host_node(sid) or "")
        if role is not None:
            return sid, role
        capi.delete(f"/v2/sessions/{sid}")
    pytest.fail("no session host landed on a worker node in 6 tries")


def test_session_host_node_lost(capi: httpx.Client, nodes: Nodes) -> None:
    sid, role = session_on_a_worker(capi, nodes)
    acked = []
    for i in range(3):
        r = capi.post(f"/v2/sessions/{sid}/run", json={"code": f"echo {i} >> notes.txt"})
        assert r.status_code == 200, r.text
        acked.append(r.json()["seq"])
    lost = nodes.workers[role].node_id
    nodes.replace(role)  # the host dies with its node; a fresh node joins
    r = run_until_ok(capi, sid, "echo alive")
    assert r.status_code == 200, r.text
    assert r.json()["stdout"] == "alive\n"
    assert host_node(sid) not in (None, lost)
    entries = transcript(capi, sid)
    assert set(acked) <= {e["seq"] for e in entries}
    capi.delete(f"/v2/sessions/{sid}")


def test_ray_sandbox_node_lost(capi: httpx.Client, nodes: Nodes) -> None:
    nodes.add("victim", labels={"pool": "spare"})
    compute = {"provider": "ray", "options": {"node_labels": {"pool": "spare"}}}
    sid = capi.post("/v2/sessions", json={"compute": compute}).json()["session_id"]
    r = capi.post(f"/v2/sessions/{sid}/run", json={"code": "echo before > notes.txt"})
    assert r.status_code == 200, r.text
    acked = r.json()["seq"]
    nodes.add("standby", labels={"pool": "spare"})
    nodes.remove("victim")
    try:
        r = run_until_ok(capi, sid, "echo after", within_s=45)
        assert r.status_code == 200, r.text
        assert r.json()["stdout"] == "after\n"
        entries = transcript(capi, sid)
        assert acked in {e["seq"] for e in entries}
        # What happened to the compute, in order. Until Ray's health checks mark the victim
        # dead (a few seconds), a replacement can be placed there and die while starting:
        # each such attempt is in the transcript, then a replacement that worked.
        steps = [
            (e["content"]["event"], e["content"].get("reason"))
            for e in entries
            if e["content"].get("event") in ("attached", "sandbox_lost", "provision_failed")
        ]
        assert steps[0] == ("attached", "create")
        assert steps[1][0] == "sandbox_lost", steps
        assert steps[-1] == ("attached", "replace_lost_sandbox"), steps
        for event, reason in steps[2:-1]:
            assert event == "sandbox_lost" or (event, reason) == (
                "provision_failed",
                "replace_lost_sandbox",
            ), steps
    finally:
        capi.delete(f"/v2/sessions/{sid}")
        nodes.remove("standby")
