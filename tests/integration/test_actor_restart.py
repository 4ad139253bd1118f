"""Killing a session actor's process loses no acknowledged transcript entry, and the
session keeps working (same id, same workspace files)."""

from __future__ import annotations

import os
import signal
import time

import httpx
import pytest
import ray

from cerver.config import Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def actor_pid(settings: Settings, session_id: str) -> int:
    directory = ray.get_actor("cerver-session-directory", namespace=settings.ray_namespace)
    host = ray.get(directory.lookup.remote(session_id), timeout=30)
    return int(ray.get(host.pid.remote(), timeout=30))


def test_killed_actor_loses_nothing_acknowledged(
    api: httpx.Client, server_settings: Settings
) -> None:
    sid = api.post("/v2/sessions", json={"compute": {"provider": "local"}}).json()["session_id"]
    acked = []
    for i in range(3):
        r = api.post(f"/v2/sessions/{sid}/run", json={"code": f"echo {i} >> notes.txt; echo {i}"})
        assert r.status_code == 200
        acked.append(r.json()["seq"])
    pid = actor_pid(server_settings, sid)
    os.kill(pid, signal.SIGKILL)
    deadline = time.time() + 60
    while True:
        r = api.post(f"/v2/sessions/{sid}/run", json={"code": "cat notes.txt"})
        if r.status_code == 200 or time.time() > deadline:
            break
        assert r.status_code == 503, r.text  # restarting: a clear, retryable answer
        time.sleep(0.5)
    assert r.status_code == 200, r.text
    assert r.json()["stdout"] == "0\n1\n2\n"  # workspace files survived
    assert actor_pid(server_settings, sid) != pid
    entries = api.get(f"/v2/sessions/{sid}", params={"full": 1}).json()["transcript"]
    seqs = [e["seq"] for e in entries]
    assert seqs == list(range(1, len(seqs) + 1))  # no gap
    assert set(acked) <= set(seqs)
    restarts = [e for e in entries if e["content"].get("event") == "actor_restarted"]
    assert len(restarts) == 1
    api.delete(f"/v2/sessions/{sid}")
