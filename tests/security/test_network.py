"""Finding 3 of issue 10: "network on" meant the host's network (loopback: Ray GCS, the
store, the gateway; the node IP; 169.254.169.254). Now a network-enabled sandbox, and
every install, has its own network namespace with user-mode networking (pasta).

No internet here: these tests assert the namespace exists and that the forbidden
targets are unreachable, never that the internet works.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Callable, Iterator

import pytest

from cerver.adapters.base import ExecRequest, SandboxRecord
from cerver.adapters.local import LocalAdapter, isolation, packages
from tests.adapters.conftest import HAS_BWRAP

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(not HAS_BWRAP, reason="bwrap is not installed on this machine"),
]

PROBE = """
import json, socket, subprocess
out = {}
for host, port in json.loads(TARGETS):
    try:
        socket.create_connection((host, port), timeout=2).close()
        out[f"{host}:{port}"] = "connected"
    except OSError as exc:
        out[f"{host}:{port}"] = type(exc).__name__ + ":" + str(exc.errno)
route = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True)
delete = subprocess.run(["ip", "route", "del", "blackhole", "10.0.0.0/8"], capture_output=True)
out["routes"] = route.stdout
out["route_deleted"] = delete.returncode == 0
out["ifaces"] = sorted(name for _, name in socket.if_nameindex())
print(json.dumps(out))
"""


def node_ip() -> str:
    """This host's non-loopback IPv4 address (the one its default route leaves by)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.123", 9))  # no packet is sent for a UDP connect
        return str(probe.getsockname()[0])


@pytest.fixture
def listeners() -> Iterator[list[tuple[str, int]]]:
    """Listeners the sandbox must not reach: on loopback and on the node's own IP."""
    socks = []
    for host in ("127.0.0.1", node_ip()):
        sock = socket.socket()
        sock.bind((host, 0))
        sock.listen()
        socks.append(sock)
    yield [sock.getsockname()[:2] for sock in socks]
    for sock in socks:
        sock.close()


@pytest.mark.parametrize("isolation", ["bwrap"], indirect=True)
async def test_network_sandbox_has_its_own_namespace_and_no_way_home(
    adapter: LocalAdapter,
    new_sandbox: Callable[..., object],
    listeners: list[tuple[str, int]],
) -> None:
    targets = [*listeners, ("169.254.169.254", 80), ("10.1.2.3", 80), ("192.168.1.1", 80)]
    sandbox = await new_sandbox(network=True)  # type: ignore[misc]
    assert isinstance(sandbox, SandboxRecord)
    code = f"TARGETS = {json.dumps(json.dumps(targets))}\n{PROBE}"
    result = await adapter.run(sandbox, ExecRequest(code=code, language="python", timeout_s=30))
    assert result.exit_code == 0, result.stderr
    seen = json.loads(result.stdout)
    for host, port in listeners:  # refused: the namespace's own loopback / own address
        assert seen[f"{host}:{port}"] == "ConnectionRefusedError:111", seen
    for host in ("169.254.169.254", "10.1.2.3", "192.168.1.1"):  # blackholed
        assert seen[f"{host}:80"] == "OSError:22", seen
    assert isolation.PASTA_IFNAME in seen["ifaces"]  # pasta's tap: a namespace of its own
    assert "blackhole 169.254.0.0/16" in seen["routes"]
    assert seen["route_deleted"] is False  # user code cannot lift the blackholes


@pytest.mark.parametrize("isolation", ["bwrap"], indirect=True)
async def test_installs_run_in_the_same_kind_of_namespace(
    adapter: LocalAdapter, sandbox: SandboxRecord
) -> None:
    from cerver.adapters.local import LocalSandboxData

    data = LocalSandboxData.model_validate(sandbox.data)
    launch = isolation.build_launch(
        adapter.settings, data, ["pip", "install", "x"], network=True, env={}
    )
    assert launch.argv[0].endswith("pasta") and "--share-net" in launch.argv
    start = launch.argv.index(isolation.ROUTE_SCRIPT) + 2
    blackholes = launch.argv[start : launch.argv.index("--", start)]
    assert "169.254.0.0/16" in blackholes
    ip = ipaddress.ip_address(node_ip())
    assert any(ip in ipaddress.ip_network(net) for net in blackholes)  # the node's subnet


def test_install_commands_run_no_package_code() -> None:
    """Lifecycle scripts off: npm --ignore-scripts; pip wheels only unless the operator
    allows source distributions (building one runs its setup.py)."""
    common = {"python": "python3", "npm": "npm", "workspace": "/workspace", "site": "/s"}
    npm = packages.install_argv("npm", "lodash", **common, allow_sdists=False)
    assert "--ignore-scripts" in npm
    pip = packages.install_argv("pip", "requests", **common, allow_sdists=False)
    assert pip[pip.index("--only-binary") + 1] == ":all:"
    sdists = packages.install_argv("pip", "requests", **common, allow_sdists=True)
    assert "--only-binary" not in sdists
