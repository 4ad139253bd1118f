"""The compute contract every provider implements.

An adapter only *acts*: what a provider *is* (runtimes, capabilities, prices, latency
profiles) is data in the catalog. Adapters are async, hold no durable state of their own
(a ``SandboxRecord`` is plain data, storable, and enough to reconnect after a restart),
and translate vendor errors at their edge into ``cerver.errors`` with ``raise ... from``.
"""

from __future__ import annotations

import abc
import re
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

from pydantic import BaseModel, Field

from cerver.config import Settings

# --- sandbox environment variables (security: docs/security.md, "Environment") ---
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
# Read by the dynamic loader or libc of whatever process they reach: a value of the
# caller's choosing loads or runs the caller's code (LD_PRELOAD, GCONV_PATH), or changes
# how libc behaves (MALLOC_*, GLIBC_TUNABLES). Refused on every route that takes env.
LOADER_ENV = re.compile(
    r"^(LD_[A-Z0-9_]*|GCONV_PATH|GLIBC_TUNABLES|MALLOC_[A-Z0-9_]*|LOCPATH|NLSPATH|"
    r"HOSTALIASES|RESOLV_HOST_CONF|RES_OPTIONS|LOCALDOMAIN|TZDIR|GETCONF_DIR)$"
)


def env_problem(name: str, value: str) -> str | None:
    """Why ``name=value`` may not be a sandbox environment variable, or None."""
    if not ENV_NAME.match(name):
        return f"environment variable name {name!r} is not valid: use letters, digits and _"
    if LOADER_ENV.match(name):
        return (
            f"environment variable {name} is refused: the dynamic loader and libc read it, "
            "so it could run code outside the sandbox; remove it"
        )
    if "\x00" in value:
        return f"environment variable {name} contains a NUL byte"
    return None


def check_env(env: dict[str, str]) -> dict[str, str]:
    """A pydantic validator (ValueError -> 422 naming the variable) for an ``env`` field."""
    for name, value in env.items():
        problem = env_problem(name, value)
        if problem is not None:
            raise ValueError(problem)
    return env


Language = Literal["shell", "python", "node"]
LANGUAGES: tuple[str, ...] = ("shell", "python", "node")


class Resources(BaseModel):
    cpu: float | None = None
    memory_mb: int | None = None
    gpu: int | None = None
    custom: dict[str, float] = Field(default_factory=dict)


class SandboxSpec(BaseModel):
    """What to provision. ``options`` carries provider-specific knobs (validated by the adapter)."""

    account_id: str
    runtime: Language = "shell"
    env: dict[str, str] = Field(default_factory=dict)
    network: bool = False
    # With ``network``: the only host names the sandbox may reach (None: no allowlist).
    # Only adapters with ``egress_allowlist`` enforce it (adapters/egress_allow.py).
    egress_allow: list[str] | None = None
    timeout_s: float | None = None
    resources: Resources = Field(default_factory=Resources)
    options: dict[str, Any] = Field(default_factory=dict)


class SandboxRecord(BaseModel):
    """Plain, storable data describing one provisioned sandbox."""

    provider: str
    sandbox_id: str
    created_at: float = Field(default_factory=time.time)
    runtime: Language = "shell"
    isolation: str = "none"  # e.g. "bwrap", "rlimits", "remote"
    data: dict[str, Any] = Field(default_factory=dict)


class ExecRequest(BaseModel):
    code: str
    language: Language = "shell"
    timeout_s: float = 60.0
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None  # relative to the sandbox workspace
    # The language was defaulted from the session's runtime: an adapter that can check
    # syntax in the sandbox runs code that does not parse in ``language`` as shell.
    shell_fallback: bool = False


class EgressDenial(BaseModel):
    """One connection the egress proxy refused (``network.allow``)."""

    host: str
    port: int
    reason: str


class ExecResult(BaseModel):
    stdout: str = ""
    stderr: str = ""
    exit_code: int = 0
    duration_ms: float = 0.0
    timed_out: bool = False
    truncated: bool = False
    # Python: the traceback text of an uncaught exception (also in stderr).
    error: str | None = None
    # Set when the provider had to restart a stateful interpreter (state was lost).
    interpreter_restarted: bool = False
    # Connections the egress allowlist refused since the sandbox's previous run.
    egress_denied: list[EgressDenial] = Field(default_factory=list)


class ExecEvent(BaseModel):
    """One streamed event: an output chunk, or the final ``exit`` carrying the whole result."""

    type: Literal["stdout", "stderr", "exit"]
    data: str = ""
    result: ExecResult | None = None


class InstallRequest(BaseModel):
    package: str
    manager: Literal["pip", "npm"] = "pip"
    timeout_s: float = 300.0


class InstallResult(BaseModel):
    success: bool
    output: str = ""
    duration_ms: float = 0.0
    egress_denied: list[EgressDenial] = Field(default_factory=list)


class SandboxState(BaseModel):
    status: str  # running | stopped | lost | ...
    provider: str
    sandbox_id: str
    user_state: dict[str, Any] = Field(default_factory=dict)
    details: dict[str, Any] = Field(default_factory=dict)


class ComputeAdapter(abc.ABC):
    """One provider's implementation of the compute contract.

    Instances are created per process (e.g. inside a session actor) with the server
    settings and the account's resolved credentials for this provider (possibly empty).
    """

    name: str
    # True when one compute of this provider carries the sandboxes of many sessions (a relay
    # host): attaching to it makes a new sandbox there instead of adopting the compute.
    hosts_sandboxes: bool = False
    # True when the adapter enforces ``SandboxSpec.egress_allow`` (others refuse it).
    egress_allowlist: bool = False

    @classmethod
    def deployment_configured(cls, settings: Settings) -> bool:
        """Whether the deployment's own settings make this provider usable by every account
        (e.g. ``P69_BASE_URL``), with no per-account credentials."""
        return False

    def __init__(self, settings: Settings, credentials: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.credentials = credentials or {}

    def __repr__(self) -> str:
        # Credential values never reach a log through a repr: their field names only.
        return f"<{type(self).__name__} credentials={sorted(self.credentials)}>"

    @abc.abstractmethod
    async def create_sandbox(self, spec: SandboxSpec) -> SandboxRecord: ...

    @abc.abstractmethod
    async def run(self, record: SandboxRecord, request: ExecRequest) -> ExecResult: ...

    @abc.abstractmethod
    def run_stream(self, record: SandboxRecord, request: ExecRequest) -> AsyncIterator[ExecEvent]:
        """Async generator of events; the last one is ``exit``. Closing it early must stop
        and reap the process."""

    @abc.abstractmethod
    async def install_package(
        self, record: SandboxRecord, request: InstallRequest
    ) -> InstallResult: ...

    @abc.abstractmethod
    async def write_file(self, record: SandboxRecord, path: str, data: bytes) -> None: ...

    @abc.abstractmethod
    async def read_file(self, record: SandboxRecord, path: str) -> bytes: ...

    @abc.abstractmethod
    async def get_state(self, record: SandboxRecord) -> SandboxState: ...

    @abc.abstractmethod
    async def set_state(self, record: SandboxRecord, state: dict[str, Any]) -> SandboxState: ...

    @abc.abstractmethod
    async def delete_sandbox(self, record: SandboxRecord) -> None:
        """Release everything. Idempotent: deleting twice is not an error."""

    async def is_alive(self, record: SandboxRecord) -> bool:
        """Whether the sandbox still exists at the provider (used on wake / restart)."""
        state = await self.get_state(record)
        return state.status not in ("lost", "stopped", "failed")

    async def warm(self, count: int) -> None:  # noqa: B027 (optional hook)
        """Keep ``count`` sandboxes ready in this process so creating one starts nothing."""

    async def suspend(self, record: SandboxRecord) -> None:  # noqa: B027 (optional hook)
        """Release this process's resources for one sandbox (e.g. a running interpreter)
        while the sandbox itself stays: used when its session hibernates."""

    async def forget(self, record: SandboxRecord) -> None:  # noqa: B027 (optional hook)
        """Drop what this instance remembers of one sandbox it no longer serves (after
        ``suspend``, when its session hibernated and left this process): a host that served
        thousands of sessions keeps nothing of those that went to sleep. The sandbox stays;
        the next process to serve it starts from its record."""

    def sandboxes_in_memory(self) -> set[str]:
        """The sandboxes this instance holds state for in memory (a census: after
        ``forget``, one that hibernated is not among them)."""
        return set()

    async def close(self) -> None:  # noqa: B027 (an optional hook: nothing to release by default)
        """Release process-local resources (connections, child processes) of this instance."""
