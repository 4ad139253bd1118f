"""`network: {"allow": [...]}` over HTTP against the real server (Ray, Serve, bwrap):
validation (422 naming the entry), denials in the run's answer, the transcript and the
session's metrics (`egress_denied_count`), on sessions and on /sandbox.

No internet and no test-only settings here: the shared server runs with defaults, so
these probes use what is refused anyway (names off the list, addresses, the gateway's own
port). Reaching an allowed name is proven in tests/security/test_egress.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from cerver.store import Store
from tests.adapters.conftest import HAS_BWRAP
from tests.conftest import E2B_TEST_KEY_REF

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(120),
    pytest.mark.skipif(not HAS_BWRAP, reason="bwrap is not installed on this machine"),
]

ALLOW = {"allow": ["pypi.org", "*.pythonhosted.org"]}

PROBE = """
import json, socket, urllib.request, urllib.error
out = {}
try:
    urllib.request.urlopen("http://not-allowed.example/x", timeout=10)
except urllib.error.HTTPError as exc:
    out["denied"] = [exc.code, exc.read().decode().strip()]
for host, port in TARGETS:
    try:
        socket.create_connection((host, port), timeout=3).close()
        out[f"{host}:{port}"] = "connected"
    except OSError as exc:
        out[f"{host}:{port}"] = exc.errno
print(json.dumps(out))
"""


def _error(r: httpx.Response) -> dict:
    assert r.status_code == 422, r.text
    return dict(r.json()["error"])


def test_bad_entries_answer_422_naming_the_entry(api: httpx.Client) -> None:
    r = api.post(
        "/v2/sessions",
        json={"compute": {"provider": "local", "network": {"allow": ["pypi.org", "10.0.0.0/8"]}}},
    )
    err = _error(r)
    assert "network.allow[1] '10.0.0.0/8' is a CIDR" in json.dumps(err), err
    err = _error(api.post("/sandbox", json={"network": {"allow": ["exa_mple.com"]}}))
    assert "network.allow[0] 'exa_mple.com' has an invalid label" in json.dumps(err), err
    err = _error(api.post("/sandbox", json={"network": {"allow": "pypi.org"}}))  # not a list
    assert "allow" in json.dumps(err)


@pytest.fixture(scope="module")
def e2b_api(server: str, store: Store) -> Iterator[httpx.Client]:
    account = store.accounts.get_or_create("egress-e2b")
    store.credentials.put(account.id, "e2b", {"e2b_api_key": E2B_TEST_KEY_REF})
    token = store.accounts.issue_token(account.id)
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=server, headers=headers, timeout=60) as client:
        yield client


def test_a_provider_that_cannot_enforce_it_refuses_it(e2b_api: httpx.Client) -> None:
    before = e2b_api.get("/v2/sessions").json()
    r = e2b_api.post("/v2/sessions", json={"compute": {"provider": "e2b", "network": ALLOW}})
    err = _error(r)
    assert err["details"]["provider"] == "e2b" and "local provider only" in err["message"]
    assert e2b_api.get("/v2/sessions").json() == before  # no half-made session


@pytest.mark.parametrize("provider", ["local", "ray"])
def test_session_denials_are_answered_recorded_and_counted(
    api: httpx.Client, server: str, provider: str
) -> None:
    """`ray`: the same sandbox in its own host actor, whose LocalAdapter runs the proxy."""
    r = api.post("/v2/sessions", json={"compute": {"provider": provider, "network": ALLOW}})
    assert r.status_code == 201, r.text
    sid = r.json()["session_id"]
    gateway = urlsplit(server)
    targets = [("1.1.1.1", 443), (gateway.hostname, gateway.port)]
    code = f"TARGETS = {targets!r}\n{PROBE}"
    r = api.post(f"/v2/sessions/{sid}/run", json={"code": code, "language": "python"})
    assert r.status_code == 200, r.text
    run = r.json()
    out = json.loads(run["stdout"])
    assert out["denied"] == [
        403,
        "cerver egress: not-allowed.example:80 denied: not in network.allow",
    ]
    assert out["1.1.1.1:443"] == 101  # ENETUNREACH: no route but the proxy
    assert out[f"{gateway.hostname}:{gateway.port}"] == 111  # its own loopback, not ours
    denial = {"host": "not-allowed.example", "port": 80, "reason": "not in network.allow"}
    assert run["egress_denied"] == [denial]

    body = {"code": code, "language": "python", "stream": True}
    with api.stream("POST", f"/v2/sessions/{sid}/run", json=body) as streamed:
        events = [json.loads(x[6:]) for x in streamed.iter_lines() if x.startswith("data: ")]
    assert events[-1]["type"] == "exit" and events[-1]["result"]["egress_denied"] == [denial]

    metrics = api.get(f"/v2/sessions/{sid}/metrics").json()["metrics"]
    assert metrics["egress_denied_count"] == 2
    entries = api.get(f"/v2/sessions/{sid}", params={"full": 1}).json()["transcript"]
    execs = [e["content"] for e in entries if e["type"] == "exec"]
    assert [e["result"]["egress_denied"] for e in execs] == [[denial], [denial]]
    quiet = api.post(f"/v2/sessions/{sid}/run", json={"code": "echo ok"}).json()
    assert quiet["egress_denied"] == []
    assert api.get(f"/v2/sessions/{sid}/metrics").json()["metrics"]["egress_denied_count"] == 2
    api.delete(f"/v2/sessions/{sid}")


def test_network_true_keeps_its_own_behaviour(api: httpx.Client) -> None:
    r = api.post("/v2/sessions", json={"compute": {"provider": "local", "network": True}})
    assert r.status_code == 201, r.text
    sid = r.json()["session_id"]
    code = "ip -4 route | grep -c blackhole; echo ${HTTPS_PROXY:-none}"
    run = api.post(f"/v2/sessions/{sid}/run", json={"code": code}).json()
    count, proxy = run["stdout"].split()
    assert int(count) >= 10 and proxy == "none"  # pasta's namespace, no proxy
    assert api.get(f"/v2/sessions/{sid}/metrics").json()["metrics"]["egress_denied_count"] == 0
    api.delete(f"/v2/sessions/{sid}")


def test_sandbox_api_takes_the_allowlist(api: httpx.Client) -> None:
    r = api.post("/sandbox", json={"network": ALLOW})
    assert r.status_code == 200, r.text
    sbx = r.json()["sandbox_id"]
    code = "TARGETS = []\n" + PROBE
    run = api.post(f"/sandbox/{sbx}/run", json={"code": code})
    assert run.status_code == 200, run.text
    assert run.json()["egress_denied"] == [
        {"host": "not-allowed.example", "port": 80, "reason": "not in network.allow"}
    ]
    api.delete(f"/sandbox/{sbx}")
