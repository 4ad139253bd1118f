"""Two ingress replicas (one per worker node) serve the same session."""

from __future__ import annotations

import httpx
import pytest
from ray import serve

pytestmark = pytest.mark.timeout(180)


def test_two_replicas_serve_one_session(capi: httpx.Client) -> None:
    status = serve.status().applications["cerver"]
    ingress = status.deployments["cerver-ingress"]
    assert ingress.status == "HEALTHY"
    assert ingress.replica_states.get("RUNNING") == 2
    sid = capi.post("/v2/sessions", json={"compute": {"provider": "local"}}).json()["session_id"]
    for i in range(20):
        r = capi.post(f"/v2/sessions/{sid}/run", json={"code": f"echo {i} >> log.txt; echo {i}"})
        assert r.status_code == 200, r.text
        assert r.json()["stdout"] == f"{i}\n"
    r = capi.post(f"/v2/sessions/{sid}/run", json={"code": "wc -l < log.txt"})
    assert r.json()["stdout"].strip() == "20"
    assert capi.delete(f"/v2/sessions/{sid}").status_code in (200, 204)
