"""What a sandbox with ``network.allow`` is launched with: the forwarder in front of its
program and the proxy environment (the host-side proxy is ``egress.py``)."""

from __future__ import annotations

from cerver.adapters.local import inside, runtimes
from cerver.adapters.local.layout import INTERNAL_DIR, LocalSandboxData
from cerver.errors import ProviderError

FORWARD_PORT = 3128  # inside the sandbox's own network namespace
SOCKET_NAME = "egress.sock"  # in the workspace's INTERNAL_DIR
FORWARDER_SOURCE = inside.source("egress_forward")


def restricted(data: LocalSandboxData) -> bool:
    """Whether the sandbox's network is the allowlist proxy (not pasta's internet)."""
    return data.network and data.egress_allow is not None


def socket_inside(data: LocalSandboxData) -> str:
    return f"{data.workspace_inside}/{INTERNAL_DIR}/{SOCKET_NAME}"


def require_bwrap(isolation: str) -> None:
    """Fail closed: without bwrap's network namespace the allowlist cannot be enforced."""
    if isolation != "bwrap":
        raise ProviderError(
            "network.allow needs bwrap isolation (its own network namespace); this node's "
            "isolation is rlimits, where sandboxes share the host's network; ask without "
            "network.allow, or the operator sets CERVER_SANDBOX_ISOLATION=bwrap",
            details={"isolation": isolation},
        )


def forwarder_argv(data: LocalSandboxData, argv: list[str]) -> list[str]:
    """``argv`` behind the forwarder; refused where the network cannot be taken away."""
    require_bwrap(data.isolation)
    python = runtimes.require(runtimes.python(), "python").executable
    forwarder = [python, "-I", "-S", "-c", FORWARDER_SOURCE]
    return [*forwarder, str(FORWARD_PORT), socket_inside(data), *argv]


def proxy_env() -> dict[str, str]:
    """What makes common tools (curl, pip, requests, urllib, npm) use the forwarder."""
    url = f"http://127.0.0.1:{FORWARD_PORT}"
    env = {}
    for name in ("http_proxy", "https_proxy", "all_proxy"):
        env[name] = env[name.upper()] = url
    env["no_proxy"] = env["NO_PROXY"] = ""
    env["npm_config_proxy"] = env["npm_config_https_proxy"] = url
    return env
