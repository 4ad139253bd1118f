"""The egress allowlist by domain name (issue 10, "Beyond the peers"): a sandbox with
``network: {"allow": [...]}`` has no network namespace route at all (bwrap's own, only a
loopback) and one way out, the host-side proxy on its unix socket, which checks the
requested name, resolves it itself and refuses private addresses.

No internet here, and the proxy refuses loopback by design. So the "allowed name reaches
its target" probes use the two TEST-ONLY settings (no environment variable sets them):
``egress_test_hosts`` maps a name to 127.0.0.1 for the proxy's resolver, and
``egress_test_targets`` exempts exactly one loopback ip:port (the test's HTTP server) from
the private-range check. Every other loopback port stays refused, which is what the DNS
rebinding probes use.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cerver.adapters.base import ExecRequest, ExecResult, SandboxRecord, SandboxSpec
from cerver.adapters.local import LocalAdapter, LocalSandboxData, egress_inside, isolation
from cerver.config import Settings
from cerver.errors import ProviderError
from tests.adapters.conftest import HAS_BWRAP, make_settings

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(not HAS_BWRAP, reason="bwrap is not installed on this machine"),
]

ALLOWED = "allowed.egress-test.example"
REBIND = "rebind.egress-test.example"  # allowed, resolves to another loopback port
METADATA = "meta.egress-test.example"  # allowed, resolves to cloud metadata
ALLOW = [ALLOWED, REBIND, METADATA, "*.wild.example"]


class _Hello(BaseHTTPRequestHandler):
    seen: list[str] = []

    def do_GET(self) -> None:
        _Hello.seen.append(f"{self.headers.get('Host')} {self.path}")
        body = b"hello-egress"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture
def target() -> Iterator[int]:
    """A real HTTP server on loopback: the one target the tests exempt."""
    _Hello.seen.clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


@pytest.fixture
def other_listener() -> Iterator[int]:
    """Another loopback listener (like the gateway's port): never exempt."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield int(sock.getsockname()[1])
    sock.close()


@pytest.fixture
def egress_settings(home: Path, target: int) -> Settings:
    return make_settings(
        home,
        "bwrap",
        egress_test_hosts={ALLOWED: "127.0.0.1", REBIND: "127.0.0.1", METADATA: "169.254.169.254"},
        egress_test_targets=(f"127.0.0.1:{target}",),
    )


@pytest.fixture
async def egress_adapter(egress_settings: Settings) -> AsyncIterator[LocalAdapter]:
    instance = LocalAdapter(egress_settings)
    yield instance
    await instance.close()


@pytest.fixture
async def allowed_sandbox(egress_adapter: LocalAdapter) -> AsyncIterator[SandboxRecord]:
    spec = SandboxSpec(account_id="acct_test", network=True, egress_allow=ALLOW)
    record = await egress_adapter.create_sandbox(spec)
    yield record
    await egress_adapter.delete_sandbox(record)


async def py(adapter: LocalAdapter, record: SandboxRecord, code: str) -> ExecResult:
    result = await adapter.run(record, ExecRequest(code=code, language="python", timeout_s=40))
    assert result.exit_code == 0, result.stderr
    return result


FETCH = """
import json, urllib.request, urllib.error
out = {}
for url in URLS:
    try:
        out[url] = urllib.request.urlopen(url, timeout=10).read().decode()
    except urllib.error.HTTPError as exc:
        out[url] = f"{exc.code}: {exc.read().decode().strip()}"
    except OSError as exc:
        out[url] = f"error: {exc}"
print(json.dumps(out))
"""


async def test_allowed_name_reaches_its_target_through_the_proxy(
    egress_adapter: LocalAdapter, allowed_sandbox: SandboxRecord, target: int
) -> None:
    url = f"http://{ALLOWED}:{target}/hi?x=1"
    result = await py(egress_adapter, allowed_sandbox, f"URLS = [{url!r}]\n{FETCH}")
    assert json.loads(result.stdout) == {url: "hello-egress"}
    assert _Hello.seen == [f"{ALLOWED}:{target} /hi?x=1"]  # origin form, the name kept
    assert result.egress_denied == []
    # CONNECT (what HTTPS uses), by curl through the proxy env the sandbox has
    curl = await egress_adapter.run(
        allowed_sandbox,
        ExecRequest(code=f"curl -sS --proxytunnel http://{ALLOWED}:{target}/tunnel", timeout_s=30),
    )
    assert (curl.exit_code, curl.stdout) == (0, "hello-egress"), curl.stderr
    assert _Hello.seen[-1] == f"{ALLOWED}:{target} /tunnel"


async def test_names_off_the_list_and_ip_literals_are_refused_and_reported(
    egress_adapter: LocalAdapter, allowed_sandbox: SandboxRecord, target: int
) -> None:
    urls = [
        f"http://denied.example:{target}/",
        f"http://127.0.0.1:{target}/",
        f"http://wild.example:{target}/",  # *.wild.example is not wild.example itself
    ]
    result = await py(egress_adapter, allowed_sandbox, f"URLS = {urls!r}\n{FETCH}")
    seen = json.loads(result.stdout)
    assert (
        seen[urls[0]] == f"403: cerver egress: denied.example:{target} denied: not in network.allow"
    )
    assert seen[urls[1]].startswith("403: ") and "an IP address" in seen[urls[1]]
    assert seen[urls[2]].endswith("not in network.allow")
    assert [(d.host, d.reason) for d in result.egress_denied] == [
        ("denied.example", "not in network.allow"),
        ("127.0.0.1", "an IP address; the allowlist holds names"),
        ("wild.example", "not in network.allow"),
    ]
    assert _Hello.seen == []  # nothing reached the target
    again = await py(egress_adapter, allowed_sandbox, "print(1)")
    assert again.egress_denied == []  # each denial is reported once


async def test_dns_rebinding_to_private_addresses_is_refused(
    egress_adapter: LocalAdapter, allowed_sandbox: SandboxRecord, other_listener: int
) -> None:
    urls = [f"http://{REBIND}:{other_listener}/", f"http://{METADATA}/latest/meta-data/"]
    result = await py(egress_adapter, allowed_sandbox, f"URLS = {urls!r}\n{FETCH}")
    seen = json.loads(result.stdout)
    assert seen[urls[0]].endswith("resolves to 127.0.0.1, which is not a public address")
    assert seen[urls[1]].endswith("resolves to 169.254.169.254, which is not a public address")
    assert len(result.egress_denied) == 2


DIRECT = """
import json, socket, subprocess
out = {}
for host, port in TARGETS:
    try:
        socket.create_connection((host, port), timeout=3).close()
        out[f"{host}:{port}"] = "connected"
    except OSError as exc:
        out[f"{host}:{port}"] = type(exc).__name__ + ":" + str(exc.errno)
try:
    socket.getaddrinfo("pypi.org", 443)
    out["dns"] = "resolved"
except OSError as exc:
    out["dns"] = type(exc).__name__
out["routes"] = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout
out["ifaces"] = sorted(name for _, name in socket.if_nameindex())
print(json.dumps(out))
"""


async def test_no_way_out_but_the_proxy(
    egress_adapter: LocalAdapter, allowed_sandbox: SandboxRecord, target: int
) -> None:
    targets = [("1.1.1.1", 443), ("169.254.169.254", 80), ("127.0.0.1", target)]
    code = f"TARGETS = {targets!r}\n{DIRECT}"
    seen = json.loads((await py(egress_adapter, allowed_sandbox, code)).stdout)
    assert seen["1.1.1.1:443"] == "OSError:101", seen  # ENETUNREACH: no route at all
    assert seen["169.254.169.254:80"] == "OSError:101", seen
    assert seen[f"127.0.0.1:{target}"] == "ConnectionRefusedError:111", seen  # its own lo
    assert seen["dns"] == "gaierror"  # no resolver reachable: names go through the proxy
    assert seen["routes"] == "" and seen["ifaces"] == ["lo"]  # no pasta, no tap


RAW = """
import json, socket
out = {}
for name, payload in REQUESTS:
    s = socket.socket(socket.AF_UNIX)
    s.connect(PATH)
    s.sendall(payload.encode())
    out[name] = s.recv(4096).decode(errors="replace").split("\\r\\n")[0]
    s.close()
print(json.dumps(out))
"""


async def test_the_socket_itself_reaches_nothing_else(
    egress_adapter: LocalAdapter,
    allowed_sandbox: SandboxRecord,
    other_listener: int,
) -> None:
    """Code that skips the forwarder and talks to the unix socket directly gets the same
    checks: IP literals, private names, other schemes, garbage."""
    data = LocalSandboxData.model_validate(allowed_sandbox.data)
    requests = [
        ("ip", f"CONNECT 127.0.0.1:{other_listener} HTTP/1.1\r\n\r\n"),
        ("ipv6", "CONNECT [::1]:22 HTTP/1.1\r\n\r\n"),
        ("decimal_ip", "CONNECT 2130706433:80 HTTP/1.1\r\n\r\n"),
        ("rebind", f"CONNECT {REBIND}:{other_listener} HTTP/1.1\r\n\r\n"),
        ("origin_form", f"GET / HTTP/1.1\r\nHost: {ALLOWED}\r\n\r\n"),
        ("ftp", f"GET ftp://{ALLOWED}/ HTTP/1.1\r\n\r\n"),
        ("garbage", "hello\r\n\r\n"),
    ]
    code = f"PATH = {egress_inside.socket_inside(data)!r}\nREQUESTS = {requests!r}\n{RAW}"
    seen = json.loads((await py(egress_adapter, allowed_sandbox, code)).stdout)
    for name in ("ip", "ipv6", "decimal_ip", "rebind"):
        assert seen[name] == "HTTP/1.1 403 Forbidden", (name, seen)
    for name in ("origin_form", "ftp", "garbage"):
        assert seen[name] == "HTTP/1.1 400 Bad Request", (name, seen)


async def test_installs_go_through_the_same_allowlist(
    egress_adapter: LocalAdapter, allowed_sandbox: SandboxRecord
) -> None:
    data = LocalSandboxData.model_validate(allowed_sandbox.data)
    launch = isolation.build_launch(
        egress_adapter.settings, data, ["pip", "install", "x"], network=True, env={}
    )
    assert not launch.argv[0].endswith("pasta") and "--share-net" not in launch.argv
    assert egress_inside.FORWARDER_SOURCE in launch.argv
    assert launch.argv[-3:] == ["pip", "install", "x"]
    proxy = f"http://127.0.0.1:{egress_inside.FORWARD_PORT}"
    env = launch.argv[launch.argv.index("HTTPS_PROXY") + 1]
    assert env == proxy


async def test_rlimits_isolation_refuses_an_allowlist(home: Path) -> None:
    adapter = LocalAdapter(make_settings(home, "rlimits"))
    try:
        with pytest.raises(ProviderError, match=r"network\.allow needs bwrap"):
            await adapter.create_sandbox(
                SandboxSpec(account_id="acct_test", network=True, egress_allow=["pypi.org"])
            )
    finally:
        await adapter.close()


async def test_the_proxy_closes_with_the_adapter(egress_settings: Settings, target: int) -> None:
    adapter = LocalAdapter(egress_settings)
    record = await adapter.create_sandbox(
        SandboxSpec(account_id="acct_test", network=True, egress_allow=[ALLOWED])
    )
    url = f"http://{ALLOWED}:{target}/"
    assert json.loads((await py(adapter, record, f"URLS = [{url!r}]\n{FETCH}")).stdout)[url] == (
        "hello-egress"
    )
    internal = Path(LocalSandboxData.model_validate(record.data).workspace) / ".cerver"
    await adapter.close()
    dirfd = os.open(internal, os.O_RDONLY | os.O_DIRECTORY)
    probe = socket.socket(socket.AF_UNIX)
    try:
        with pytest.raises(ConnectionRefusedError):  # the file is left; nobody listens
            probe.connect(f"/proc/self/fd/{dirfd}/egress.sock")
    finally:
        probe.close()
        os.close(dirfd)
    reopened = LocalAdapter(egress_settings)  # a restarted host listens again
    try:
        out = await py(reopened, record, f"URLS = [{url!r}]\n{FETCH}")
        assert json.loads(out.stdout)[url] == "hello-egress"
    finally:
        await reopened.delete_sandbox(record)
        await reopened.close()
