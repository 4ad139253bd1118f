"""Warm pool, hibernation and wake, and backpressure of session hosts (real Ray actors)."""

from __future__ import annotations

import time

import httpx
import pytest
import ray

from cerver.actors.session_directory import Overloaded, directory_handle
from cerver.adapters.base import ExecRequest
from cerver.config import Settings
from cerver.models import ComputeChoice
from cerver.store import SessionRow, Store
from cerver.store.ids import new_id, now

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def directory(settings: Settings):  # type: ignore[no-untyped-def]
    return ray.get_actor("cerver-session-directory", namespace=settings.ray_namespace)


def host_of(settings: Settings, session_id: str):  # type: ignore[no-untyped-def]
    return ray.get(directory(settings).lookup.remote(session_id), timeout=30)


def test_hibernate_and_wake_keeps_transcript_files_and_says_what_was_lost(
    api: httpx.Client, server_settings: Settings
) -> None:
    r = api.post("/v2/sessions", json={"compute": {"provider": "local"}})
    assert r.status_code == 201, r.text
    sid = r.json()["session_id"]
    api.post(f"/v2/sessions/{sid}/run", json={"code": "echo kept > file.txt"})
    api.post(f"/v2/sessions/{sid}/run", json={"code": "v = 7", "language": "python"})
    host = host_of(server_settings, sid)
    assert host is not None
    ray.get(host.hibernate_now.remote(sid), timeout=30)
    assert host_of(server_settings, sid) is None  # unbound: no live process for it
    # Reads never wake it.
    peek = api.get(f"/v2/sessions/{sid}", params={"tail": 1}).json()
    assert peek["transcript"][-1]["content"]["event"] == "hibernated"
    api.get(f"/v2/sessions/{sid}/metrics")
    assert host_of(server_settings, sid) is None
    # The next call wakes it: same id, same files; interpreter state was not kept.
    out = api.post(f"/v2/sessions/{sid}/run", json={"code": "cat file.txt"}).json()
    assert out["stdout"] == "kept\n"
    assert host_of(server_settings, sid) is not None
    lost = api.post(
        f"/v2/sessions/{sid}/run", json={"code": "print(v)", "language": "python"}
    ).json()
    assert "exit_code" in lost, lost
    assert lost["exit_code"] != 0 and "NameError" in lost["stderr"]
    entries = api.get(f"/v2/sessions/{sid}", params={"full": 1}).json()["transcript"]
    hib = [e for e in entries if e["content"].get("event") == "hibernated"]
    assert len(hib) == 1 and "python" in " ".join(hib[0]["content"]["lost"])
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    api.delete(f"/v2/sessions/{sid}")


def test_a_hibernated_session_leaves_nothing_in_its_host(
    api: httpx.Client, server_settings: Settings
) -> None:
    """Hosts serve thousands of sessions over their life: one that hibernated must leave no
    state behind in the host's memory (not its session, not its sandbox's handles)."""
    sid = api.post("/v2/sessions", json={"compute": {"provider": "local"}}).json()["session_id"]
    assert api.post(f"/v2/sessions/{sid}/run", json={"code": "echo hi > f.txt"}).status_code == 200
    sandbox_id = api.get(f"/v2/sessions/{sid}").json()["sandbox_id"]
    host = host_of(server_settings, sid)
    held = ray.get(host.footprint.remote(), timeout=30)
    assert sid in held["sessions"] and sandbox_id in held["sandboxes_in_memory"]
    ray.get(host.hibernate_now.remote(sid), timeout=30)
    held = ray.get(host.footprint.remote(), timeout=30)
    assert sid not in held["sessions"] and sandbox_id not in held["sandboxes_in_memory"]
    # It wakes with its files, wherever it is bound next.
    out = api.post(f"/v2/sessions/{sid}/run", json={"code": "cat f.txt"}).json()
    assert out["stdout"] == "hi\n", out
    api.delete(f"/v2/sessions/{sid}")


def test_a_call_that_arrives_while_its_session_hibernates_waits_then_wakes_it(
    api: httpx.Client, server_settings: Settings
) -> None:
    """The run must not go to a sandbox that is being torn down: it waits for the
    hibernation, is told the host no longer serves the session, and the router wakes it."""
    sid = api.post("/v2/sessions", json={"compute": {"provider": "local"}}).json()["session_id"]
    assert api.post(f"/v2/sessions/{sid}/run", json={"code": "echo hi > f.txt"}).status_code == 200
    host = host_of(server_settings, sid)
    # Calls from one caller start in order: the run starts while the hibernation runs.
    hibernating = host.hibernate_now.remote(sid)
    racing = host.run.remote(sid, ExecRequest(code="cat f.txt"), time.time())
    ray.get(hibernating, timeout=30)
    with pytest.raises(Exception, match="does not serve"):
        ray.get(racing, timeout=30)
    assert host_of(server_settings, sid) is None
    out = api.post(f"/v2/sessions/{sid}/run", json={"code": "cat f.txt"}).json()
    assert out["stdout"] == "hi\n", out
    api.delete(f"/v2/sessions/{sid}")


def test_pool_refills_after_sessions_take_hosts(
    api: httpx.Client, server_settings: Settings
) -> None:
    d = directory(server_settings)
    before = ray.get(d.stats.remote())
    ids = [
        api.post("/v2/sessions", json={"compute": {"provider": "local"}}).json()["session_id"]
        for _ in range(3)
    ]
    deadline = time.time() + 60
    stats = ray.get(d.stats.remote())
    while stats["empty_hosts"] < server_settings.session_pool_size and time.time() < deadline:
        time.sleep(0.2)
        stats = ray.get(d.stats.remote())
    assert stats["empty_hosts"] >= server_settings.session_pool_size
    assert stats["live"] >= 3
    # Sessions share hosts: far fewer host processes than live sessions.
    assert stats["hosts"] - stats["empty_hosts"] <= stats["live"]
    assert max(stats["per_host"]) >= 2
    assert stats["created_total"] >= before["created_total"]
    for sid in ids:
        api.delete(f"/v2/sessions/{sid}")
    after = ray.get(d.stats.remote())
    assert after["live"] == stats["live"] - 3


def _session_row(store: Store, account_id: str) -> SessionRow:
    stamp = now()
    row = SessionRow(
        id=new_id("sess"),
        account_id=account_id,
        name=None,
        status="ready",
        provider=None,
        compute_id=None,
        harness=None,
        runtime="shell",
        created_at=stamp,
        updated_at=stamp,
        closed_at=None,
        metrics={},
        routing=None,
    )
    store.sessions.create(row, [("system", {"event": "created"})])
    return row


def _own_directory(server_settings: Settings, name: str, **overrides: object):  # type: ignore[no-untyped-def]
    """A session directory of its own (own Ray namespace), warmed, and an account to use it."""
    settings = server_settings.model_copy(
        update={"ray_namespace": f"{name}-{time.time_ns()}", **overrides}
    )
    store = Store.open(settings.database_url)
    account = store.accounts.get_or_create(f"{name}-test")
    d = directory_handle(settings)
    ray.get(d.warm.remote(), timeout=60)
    return store, account, d


def test_idle_timer_hibernates_and_limits_apply(server_settings: Settings) -> None:
    # A short idle timer and tight limits.
    store, account, d = _own_directory(
        server_settings,
        "hibernation",
        hibernate_after_s=6.0,
        session_pool_size=2,
        max_live_sessions=2,
        max_live_sessions_per_account=2,
    )
    rows = [_session_row(store, account.id) for _ in range(3)]
    h1 = ray.get(d.acquire.remote(rows[0].id, account.id), timeout=60)
    ray.get(d.acquire.remote(rows[1].id, account.id), timeout=60)
    assert ray.get(d.stats.remote())["live"] == 2, ray.get(d.stats.remote())
    with pytest.raises(Overloaded) as info:
        ray.get(d.acquire.remote(rows[2].id, account.id), timeout=60)
    assert info.value.retry_after_s >= 1 and "maximum of 2" in info.value.message
    ray.get(h1.attach.remote(rows[0].id, ComputeChoice(provider="local"), "test"), timeout=60)
    # Idle for longer than the timer: both hibernate and free their slots.
    deadline = time.time() + 30
    while ray.get(d.stats.remote())["live"] and time.time() < deadline:
        time.sleep(0.2)
    assert ray.get(d.stats.remote())["live"] == 0
    ray.get(d.acquire.remote(rows[2].id, account.id), timeout=60)  # room again
    types = [e.content.get("event") for e in store.sessions.transcript(rows[0].id)]
    assert types[-1] == "hibernated"


def test_burst_beyond_the_pool_starts_only_the_hosts_it_needs(server_settings: Settings) -> None:
    # 16 sessions at once, 4 per host, 1 host ready: 4 hosts are needed. Starting a host per
    # waiting session (the old behaviour) started 13 processes for this burst.
    store, account, d = _own_directory(
        server_settings,
        "burst",
        session_pool_size=1,
        session_pool_max=1,  # no growth to the burst's demand after it (4 more hosts)
        sessions_per_host=4,
        max_live_sessions=100,
        max_live_sessions_per_account=100,
    )
    rows = [_session_row(store, account.id) for _ in range(16)]
    handles = ray.get([d.acquire.remote(row.id, account.id) for row in rows], timeout=120)
    try:
        stats = ray.get(d.stats.remote())
        assert stats["live"] == 16
        assert max(stats["per_host"]) <= 4
        # 4 hosts for the sessions, plus at most the pool's refill (1) and one being started.
        assert stats["created_total"] <= 6, stats
    finally:
        for handle in {h._actor_id.hex(): h for h in handles}.values():
            ray.kill(handle)
        ray.kill(d)


def test_overload_answers_429_with_retry_after(
    server: str, crowd_token: str, server_settings: Settings
) -> None:
    limit = server_settings.max_live_sessions_per_account
    headers = {"Authorization": f"Bearer {crowd_token}"}
    with httpx.Client(base_url=server, headers=headers, timeout=120) as crowd:
        ids = []
        for _ in range(limit):
            r = crowd.post("/v2/sessions", json={"compute": {"provider": "local"}})
            assert r.status_code == 201, r.text
            ids.append(r.json()["session_id"])
        before = len(crowd.get("/v2/sessions", params={"limit": 200}).json()["sessions"])
        started = time.monotonic()
        r = crowd.post("/v2/sessions", json={"compute": {"provider": "local"}})
        waited = time.monotonic() - started
        assert r.status_code == 429, r.text
        assert int(r.headers["Retry-After"]) >= 1
        assert r.json()["error"]["code"] == "overloaded"
        assert waited >= server_settings.overload_wait_s * 0.9  # it waited briefly first
        # Nothing half-made: the refused session does not exist.
        assert len(crowd.get("/v2/sessions", params={"limit": 200}).json()["sessions"]) == before
        crowd.delete(f"/v2/sessions/{ids.pop()}")
        r = crowd.post("/v2/sessions", json={"compute": {"provider": "local"}})
        assert r.status_code == 201, r.text
        ids.append(r.json()["session_id"])
        for sid in ids:
            assert crowd.delete(f"/v2/sessions/{sid}").status_code == 200


def test_sandbox_vanished_while_asleep_is_replaced(
    api: httpx.Client, server_settings: Settings
) -> None:
    import shutil

    r = api.post("/v2/sessions", json={"compute": {"provider": "local"}})
    assert r.status_code == 201, r.text
    first = r.json()
    sid = first["session_id"]
    api.post(f"/v2/sessions/{sid}/run", json={"code": "echo gone > f.txt"})
    ray.get(host_of(server_settings, sid).hibernate_now.remote(sid), timeout=30)
    shutil.rmtree(server_settings.sandboxes_dir / first["sandbox_id"])
    out = api.post(f"/v2/sessions/{sid}/run", json={"code": "ls f.txt; echo fresh"}).json()
    assert out["stdout"].endswith("fresh\n") and "f.txt" not in out["stdout"]
    now = api.get(f"/v2/sessions/{sid}").json()
    assert now["compute_id"] != first["compute_id"] and now["provider"] == "local"
    entries = api.get(f"/v2/sessions/{sid}", params={"full": 1}).json()["transcript"]
    events = [e["content"].get("event") for e in entries]
    lost = events.index("sandbox_lost")
    assert events[lost + 1] == "attached"
    assert entries[lost + 1]["content"]["reason"] == "replace_lost_sandbox"
    api.delete(f"/v2/sessions/{sid}")
