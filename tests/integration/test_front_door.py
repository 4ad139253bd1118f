"""What the front door must keep, whichever it is (HAProxy, the default, or Serve's proxy
with CERVER_SERVE_HAPROXY=0): the client's own address for the per-client rate limits, a client
cannot pick its bucket with X-Forwarded-For, and a client that hangs up cancels its
(non-streamed) run: the process stops and the account's run slot comes back."""

from __future__ import annotations

import json
import socket
import time
from urllib.parse import urlsplit

import httpx
import pytest
import ray

from cerver.config import Settings
from tests.integration.conftest import PREFIX, capped_client

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _recommend(base: str, source: str, forged: str | None = None) -> int:
    """POST /gateway/recommend from ``source`` (a loopback address of its own); the body is
    wrong on purpose (422: cheap), so only the rate limit can say 429."""
    headers = {"X-Forwarded-For": forged} if forged else {}
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(base_url=base, transport=transport, timeout=30) as client:
        return client.post("/gateway/recommend", json={"unknown": 1}, headers=headers).status_code


def test_rate_limits_are_per_client_and_the_header_does_not_dodge_them(
    server: str, capped_settings: Settings
) -> None:
    # The capped app's bucket: 5, refilled at 0.5/s. Every request claims another address:
    # were the header believed, each would have a fresh bucket and none would be refused.
    base = server + PREFIX
    statuses = [_recommend(base, "127.0.0.2", f"198.51.100.{i + 1}") for i in range(12)]
    assert set(statuses) <= {422, 429} and statuses[:3] == [422] * 3, statuses
    assert statuses.count(429) >= 3, statuses  # 12 requests, at most 5 + 0.5/s tokens
    # Another client (another loopback source address) has a bucket of its own: behind
    # HAProxy this needs the client's address, not HAProxy's, to reach the app.
    assert _recommend(base, "127.0.0.3") == 422


def _runs_held(settings: Settings, account_id: str) -> int:
    from cerver.actors.account_limits import limits_handle

    return int(ray.get(limits_handle(settings).held.remote(account_id))["run"])


def _wait(check, timeout_s: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


def test_a_client_that_hangs_up_cancels_its_run(server: str, capped_settings: Settings) -> None:
    from cerver.store import Store

    with capped_client(server, capped_settings, "front-door-hangup") as client:
        sid = client.post("/v2/sessions", json={"compute": {"provider": "local"}}).json()[
            "session_id"
        ]
        account_id = Store.open(capped_settings.database_url).sessions.get(sid).account_id
        assert client.post(f"/v2/sessions/{sid}/run", json={"code": "true"}).status_code == 200
        # The run, over a socket of our own, so the test decides when the client hangs up.
        url = urlsplit(server)
        body = json.dumps({"code": "sleep 6; echo late > marker", "language": "shell"})
        request = (
            f"POST /capped/v2/sessions/{sid}/run HTTP/1.1\r\nHost: {url.netloc}\r\n"
            f"Authorization: {client.headers['Authorization']}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}"
        )
        sock = socket.create_connection((url.hostname, url.port))
        sock.sendall(request.encode())
        assert _wait(lambda: _runs_held(capped_settings, account_id) == 1, 10), "never admitted"
        time.sleep(0.5)  # the command has started
        sock.close()
        hung_up = time.monotonic()
        # The slot comes back well before the command would have ended (6 s)...
        assert _wait(lambda: _runs_held(capped_settings, account_id) == 0, 4), (
            "the run's slot is still held 4 s after its client hung up"
        )
        # ...and the command was stopped: its file never appears.
        time.sleep(max(0.0, hung_up + 7 - time.monotonic()))
        r = client.post(
            f"/v2/sessions/{sid}/run",
            json={"code": "cat marker 2>/dev/null || echo absent", "language": "shell"},
        )
        assert r.status_code == 200 and r.json()["stdout"] == "absent\n", r.text
        client.delete(f"/v2/sessions/{sid}")
