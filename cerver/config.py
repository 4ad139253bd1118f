"""Settings: one object, read from ``CERVER_*`` environment variables in one place.

Every getter validates and names the variable in its error, so a bad value fails at start-up
with a message that says what to change. Settings are plain data (a pydantic model), passed
explicitly to Serve replicas and actors rather than re-read from each process's environment.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, SecretStr

from cerver.labels import selector_problem

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_MAX_BODY_BYTES = 1 * 1024 * 1024
DEFAULT_OUTPUT_LIMIT_BYTES = 1 * 1024 * 1024
DEFAULT_RUN_TIMEOUT_S = 60.0
DEFAULT_MAX_RUN_TIMEOUT_S = 3600.0
# E2B (the `e2b` provider, docs/providers.md): the real service unless pointed at a fake.
DEFAULT_E2B_API_URL = "https://api.e2b.app"
DEFAULT_E2B_TEMPLATE = "code-interpreter-v1"
DEFAULT_VERCEL_API_URL = "https://vercel.com/api"
DEFAULT_DAYTONA_API_URL = "https://app.daytona.io/api"


class ConfigError(ValueError):
    """A CERVER_* variable holds a value we cannot use."""


def _env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def _env_int(name: str, default: int, *, minimum: int = 0) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return value


def _env_float(name: str, default: float, *, minimum: float = 0.0) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return value


def _env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = os.environ.get(name, default) or default
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _env_networks(name: str) -> list[str]:
    """A comma-separated list of IP addresses or CIDR networks, e.g. ``10.0.0.5,10.1.0.0/16``."""
    import ipaddress

    raw = os.environ.get(name, "")
    found = []
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        try:
            found.append(str(ipaddress.ip_network(part, strict=False)))
        except ValueError:
            raise ConfigError(
                f"{name} must be comma-separated IP addresses or CIDR networks, e.g. "
                f"10.0.0.5,10.1.0.0/16; {part!r} is neither"
            ) from None
    return found


def _env_list(name: str) -> tuple[str, ...]:
    """A comma-separated list; blanks dropped."""
    raw = os.environ.get(name) or ""
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _env_labels(name: str) -> dict[str, str]:
    """A Ray label selector as a JSON object of strings, e.g. ``{"cerver-pool": "cpu"}``."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return {}
    example = f"""{name}='{{"cerver-pool": "cpu"}}'"""
    try:
        value = json.loads(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a JSON object, e.g. {example}; got {raw!r}") from None
    problem = selector_problem(value)
    if problem:
        raise ConfigError(f"{name}: {problem}; e.g. {example}")
    return dict(value)


def _env_json_object(name: str, example: str) -> dict:  # type: ignore[type-arg]
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a JSON object, e.g. {name}='{example}'") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{name} must be a JSON object, e.g. {name}='{example}'")
    return value


def _env_optional_float(name: str) -> float | None:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return None
    return _env_float(name, 0.0)


def _llm_base_urls() -> dict[str, str]:
    """The SDKs' standard variables, read here so replicas on other nodes get them too."""
    found = {
        "openai": os.environ.get("OPENAI_BASE_URL", ""),
        "anthropic": os.environ.get("ANTHROPIC_BASE_URL", ""),
        "openai-compatible": os.environ.get("CERVER_OPENAI_COMPATIBLE_BASE_URL", ""),
    }
    return {harness: url for harness, url in found.items() if url}


class Settings(BaseModel):
    home: Path
    database_url: str
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    ray_namespace: str = "cerver"
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    # Sandboxes (the `local` provider and everything built on it).
    local_provider: bool = True
    default_provider: str = "local"
    # Server policy, never a tenant option: bwrap (default; "auto" means the same) or
    # rlimits, which the operator must choose explicitly. Fails closed (docs/security.md).
    sandbox_isolation: str = "bwrap"
    sandbox_uid_base: int = 200_000
    sandbox_memory_mb: int = 1024
    sandbox_nproc: int = 128
    sandbox_cpu_s: int = 600
    sandbox_fsize_mb: int = 256
    sandbox_allow_sdists: bool = False  # pip may build source distributions (runs setup.py)
    # Egress allowlist proxy (docs/security.md): TEST ONLY, no environment variable sets
    # them. A name -> IPv4 table consulted before DNS, and "ip:port" targets the proxy may
    # reach although not public (a test's loopback server).
    egress_test_hosts: dict[str, str] = Field(default_factory=dict)
    egress_test_targets: tuple[str, ...] = ()
    # --- Per-sandbox cgroups and disk (docs/security.md, "limits and their settings") ----
    cgroups: str = "auto"  # auto | required (fail closed) | off
    cgroups_parent: str = ""  # a delegated cgroup to make sandbox cgroups in ("": probed)
    sandbox_total_memory_mb: int = 2048  # memory of the whole sandbox (cgroup)
    sandbox_pids_max: int = 256  # tasks (processes and threads) of the whole sandbox
    sandbox_cpus: float = 1.0  # CPUs of the whole sandbox (cgroup CPU quota)
    sandbox_disk_mb: int = 1024  # bytes on disk of one workspace (0: no budget)
    sandbox_disk_files: int = 100_000  # files (inodes) of one workspace
    # --- end of per-sandbox cgroups and disk ----------------------------------------------
    output_limit_bytes: int = DEFAULT_OUTPUT_LIMIT_BYTES
    max_file_bytes: int = 16 * 1024 * 1024
    run_timeout_s: float = DEFAULT_RUN_TIMEOUT_S
    sandbox_idle_s: float = 3600.0
    # Session hosts: warm pool, hibernation, backpressure (docs/sessions.md).
    session_pool_size: int = 2
    sessions_per_host: int = 32
    # Ray label selector for session host actors (e.g. keep them off the head node).
    session_host_labels: dict[str, str] = {}
    sandbox_pool_size: int = 1
    # --- Bursts (docs/performance.md, "Bursts and time to interactive") -----------------
    # The pools grow to recent demand, up to these: ready sandboxes per host (when the
    # sandbox pool is on), empty session hosts.
    sandbox_pool_max: int = 16
    session_pool_max: int = 4
    # --- end of bursts -------------------------------------------------------------------
    hibernate_after_s: float = 300.0
    max_live_sessions: int = 500
    max_live_sessions_per_account: int = 200
    overload_wait_s: float = 1.0
    max_run_timeout_s: float = DEFAULT_MAX_RUN_TIMEOUT_S
    # --- Account caps and API bounds (docs/security.md, "API-side limits") ---------------
    max_computes_per_account: int = 50  # live computes: /sandbox ones and sessions' ones
    max_open_sessions_per_account: int = 1000  # sessions not closed (hibernated count)
    max_concurrent_runs_per_account: int = 32  # runs, streams and installs at once
    transcript_budget_bytes: int = 64 * 1024 * 1024  # per session; oldest exec output trimmed
    transcript_page_max_bytes: int = 4 * 1024 * 1024  # one GET of a transcript, at most
    transcript_full_max_entries: int = 2000  # ?full=1 returns at most this many entries
    stress_jobs_max: int = 200  # stress-test jobs kept (running or finished)
    stress_job_ttl_s: float = 3600.0  # finished jobs are forgotten after this
    trusted_proxies: list[str] = []  # peers whose X-Forwarded-For the rate limiter believes
    # issue 16 (haproxy): the per-client token bucket of the anonymous /gateway endpoints
    gateway_rate_per_s: float = 60.0
    gateway_burst: int = 120
    # --- end of account caps ------------------------------------------------------------
    # E2B: control-plane URL; sandbox URL ("" = E2B's own routing); template; how long a
    # sandbox runs unused before E2B pauses it (state kept; the next run resumes it).
    e2b_api_url: str = DEFAULT_E2B_API_URL
    e2b_sandbox_url: str = ""
    e2b_template: str = DEFAULT_E2B_TEMPLATE
    e2b_timeout_s: int = 3600
    # --- LLM turns (docs/llm.md) -----------------------------------------------------------
    # Base URL per harness; unset means the SDK's default (which reads OPENAI_BASE_URL /
    # ANTHROPIC_BASE_URL from the process environment). Keys are never settings: they are
    # resolved by name through the secrets backend (cerver/llm/keys.py).
    llm_base_urls: dict[str, str] = {}
    llm_default_models: dict[str, str] = {
        "openai": "gpt-5",
        "anthropic": "claude-sonnet-4-5",
    }
    llm_max_output_tokens: int = 4096
    llm_budget_usd: float | None = None
    llm_timeout_s: float = 120.0
    llm_retries: int = 2
    llm_retry_max_wait_s: float = 30.0
    premium_model: str | None = None
    openai_compatible_models: list[str] = []
    # model -> {"input", "output", "cache_read", "cache_write"} USD per million tokens.
    llm_prices: dict[str, dict[str, float]] = {}
    dashboard_session_hours: float = 12.0  # a dashboard sign-in lasts this long
    # Serve ingress replicas (a relay's socket ends at one; its runs may arrive at any).
    ingress_replicas: int = 1
    # Relay (docs/relay.md): device login, heartbeats, frame size.
    relay_login_ttl_s: float = 900.0
    relay_poll_interval_s: float = 5.0
    relay_heartbeat_s: float = 10.0
    relay_heartbeat_timeout_s: float = 30.0
    relay_max_frame_bytes: int = 24 * 1024 * 1024
    # p69: another Cerver (or p69-compatible server) used as a compute, over HTTP.
    p69_base_url: str = ""
    p69_api_key: str = Field(default="", repr=False)  # a secret: never in a repr
    # --- issue 11 (cloud): bring-your-own-cloud providers and their credentials ---
    secrets_backend: str = "env"
    # Names (and PREFIX* patterns) a credential reference may name; empty: none resolve.
    secret_refs: tuple[str, ...] = ()
    # The one key sealing values at rest: provider credentials and compute-record env values
    # (cerver/secretbox.py). from_env resolves it (CERVER_SECRET_KEY, else the old
    # CERVER_RECORD_KEY, else CERVER_HOME/secret.key); None: the files in ``home``.
    secret_key: SecretStr | None = None
    # Keys found under the old names that still open what they sealed, never seal.
    older_secret_keys: tuple[SecretStr, ...] = ()
    vercel_api_url: str = DEFAULT_VERCEL_API_URL
    daytona_api_url: str = DEFAULT_DAYTONA_API_URL
    # --- issue 16 (perfpath): the request hot path (docs/performance.md) ---
    # Serve's HAProxy ingress in front of the replicas (the default; set before Ray starts,
    # cerver/serve_app/ingress.py). Off (CERVER_SERVE_HAPROXY=0): Serve's own Python proxy.
    # docs/performance.md, "The front door".
    serve_haproxy: bool = True
    # A Server-Timing header on every response: where the request's milliseconds went.
    server_timing: bool = True

    @property
    def sandboxes_dir(self) -> Path:
        return self.home / "sandboxes"

    @classmethod
    def from_env(cls, *, at_rest_keys: bool = True) -> Settings:
        """Settings from ``CERVER_*``. ``at_rest_keys=False`` (the relay, on a user's
        machine: it seals nothing) neither reads nor makes the at-rest key."""
        home = Path(_env_str("CERVER_HOME", str(Path.home() / ".cerver"))).expanduser().resolve()
        return cls(
            home=home,
            database_url=_env_str("CERVER_DATABASE_URL", f"sqlite:///{home / 'cerver.db'}"),
            host=_env_str("CERVER_HOST", DEFAULT_HOST),
            port=_env_int("CERVER_PORT", DEFAULT_PORT, minimum=1),
            ray_namespace=_env_str("CERVER_RAY_NAMESPACE", "cerver"),
            max_body_bytes=_env_int("CERVER_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES, minimum=1024),
            local_provider=_env_bool("CERVER_LOCAL_PROVIDER", True),
            default_provider=_env_str("CERVER_DEFAULT_PROVIDER", "local"),
            sandbox_isolation=_env_choice(
                "CERVER_SANDBOX_ISOLATION", "bwrap", ("auto", "bwrap", "rlimits")
            ),
            sandbox_uid_base=_env_int("CERVER_SANDBOX_UID_BASE", 200_000, minimum=1000),
            sandbox_memory_mb=_env_int("CERVER_SANDBOX_MEMORY_MB", 1024, minimum=64),
            sandbox_nproc=_env_int("CERVER_SANDBOX_NPROC", 128, minimum=8),
            sandbox_cpu_s=_env_int("CERVER_SANDBOX_CPU_S", 600, minimum=1),
            sandbox_fsize_mb=_env_int("CERVER_SANDBOX_FSIZE_MB", 256, minimum=1),
            sandbox_allow_sdists=_env_bool("CERVER_SANDBOX_ALLOW_SDISTS", False),
            **_sandbox_cgroup_settings(),
            output_limit_bytes=_env_int(
                "CERVER_OUTPUT_LIMIT_BYTES", DEFAULT_OUTPUT_LIMIT_BYTES, minimum=1024
            ),
            max_file_bytes=_env_int("CERVER_MAX_FILE_BYTES", 16 * 1024 * 1024, minimum=1024),
            sandbox_idle_s=_env_float("CERVER_SANDBOX_IDLE_S", 3600.0, minimum=1.0),
            session_pool_size=_env_int("CERVER_SESSION_POOL_SIZE", 2, minimum=0),
            sessions_per_host=_env_int("CERVER_SESSIONS_PER_HOST", 32, minimum=1),
            session_host_labels=_env_labels("CERVER_SESSION_HOST_LABELS"),
            sandbox_pool_size=_env_int("CERVER_SANDBOX_POOL_SIZE", 1, minimum=0),
            sandbox_pool_max=_env_int("CERVER_SANDBOX_POOL_MAX", 16, minimum=0),
            session_pool_max=_env_int("CERVER_SESSION_POOL_MAX", 4, minimum=0),
            hibernate_after_s=_env_float("CERVER_HIBERNATE_AFTER_S", 300.0, minimum=0.1),
            max_live_sessions=_env_int("CERVER_MAX_LIVE_SESSIONS", 500, minimum=1),
            max_live_sessions_per_account=_env_int(
                "CERVER_MAX_LIVE_SESSIONS_PER_ACCOUNT", 200, minimum=1
            ),
            overload_wait_s=_env_float("CERVER_OVERLOAD_WAIT_S", 1.0, minimum=0.0),
            run_timeout_s=_env_float("CERVER_RUN_TIMEOUT_S", DEFAULT_RUN_TIMEOUT_S, minimum=0.1),
            max_run_timeout_s=_env_float(
                "CERVER_MAX_RUN_TIMEOUT_S", DEFAULT_MAX_RUN_TIMEOUT_S, minimum=1.0
            ),
            **_limits_from_env(),
            e2b_api_url=_env_str("CERVER_E2B_API_URL", DEFAULT_E2B_API_URL),
            e2b_sandbox_url=_env_str("CERVER_E2B_SANDBOX_URL", ""),
            e2b_template=_env_str("CERVER_E2B_TEMPLATE", DEFAULT_E2B_TEMPLATE),
            e2b_timeout_s=_env_int("CERVER_E2B_TIMEOUT_S", 3600, minimum=60),
            **_llm_settings(),
            dashboard_session_hours=_env_float(
                "CERVER_DASHBOARD_SESSION_HOURS", 12.0, minimum=0.01
            ),
            ingress_replicas=_env_int("CERVER_INGRESS_REPLICAS", 1, minimum=1),
            relay_login_ttl_s=_env_float("CERVER_RELAY_LOGIN_TTL_S", 900.0, minimum=1.0),
            relay_poll_interval_s=_env_float("CERVER_RELAY_POLL_INTERVAL_S", 5.0, minimum=0.1),
            relay_heartbeat_s=_env_float("CERVER_RELAY_HEARTBEAT_S", 10.0, minimum=0.1),
            relay_heartbeat_timeout_s=_env_float(
                "CERVER_RELAY_HEARTBEAT_TIMEOUT_S", 30.0, minimum=0.5
            ),
            relay_max_frame_bytes=_env_int(
                "CERVER_RELAY_MAX_FRAME_BYTES", 24 * 1024 * 1024, minimum=4096
            ),
            p69_base_url=_env_str("P69_BASE_URL", ""),
            p69_api_key=_env_str("P69_API_KEY", ""),
            secrets_backend=_env_choice("CERVER_SECRETS_BACKEND", "env", ("env",)),
            secret_refs=_env_list("CERVER_SECRET_REFS"),
            **(_secret_keys(home) if at_rest_keys else {}),
            vercel_api_url=_env_str("CERVER_VERCEL_API_URL", DEFAULT_VERCEL_API_URL),
            daytona_api_url=_env_str("CERVER_DAYTONA_API_URL", DEFAULT_DAYTONA_API_URL),
            serve_haproxy=_env_bool("CERVER_SERVE_HAPROXY", True),  # issue 16 (perfpath)
            server_timing=_env_bool("CERVER_SERVER_TIMING", True),  # issue 16 (perfpath)
        )


def _secret_keys(home: Path) -> dict[str, Any]:
    """The one at-rest key and the older ones (cerver/secretbox.py); old names in use are
    logged as warnings (from_env runs once, at a process's start)."""
    import logging

    from cerver.secretbox import resolve_keys

    keys = resolve_keys(home, os.environ)
    for notice in keys.notices:
        logging.getLogger("cerver.config").warning(notice)
    return {
        "secret_key": SecretStr(keys.primary),
        "older_secret_keys": tuple(SecretStr(k) for k in keys.older),
    }


def _sandbox_cgroup_settings() -> dict[str, Any]:
    """Per-sandbox cgroups and disk (docs/security.md, "limits and their settings")."""
    return {
        "cgroups": _env_choice("CERVER_CGROUPS", "auto", ("auto", "required", "off")),
        "cgroups_parent": _env_str("CERVER_CGROUPS_PARENT", ""),
        "sandbox_total_memory_mb": _env_int("CERVER_SANDBOX_TOTAL_MEMORY_MB", 2048, minimum=64),
        "sandbox_pids_max": _env_int("CERVER_SANDBOX_PIDS_MAX", 256, minimum=16),
        "sandbox_cpus": _env_float("CERVER_SANDBOX_CPUS", 1.0, minimum=0.01),
        "sandbox_disk_mb": _env_int("CERVER_SANDBOX_DISK_MB", 1024, minimum=0),
        "sandbox_disk_files": _env_int("CERVER_SANDBOX_DISK_FILES", 100_000, minimum=100),
    }


def _limits_from_env() -> dict[str, Any]:
    """The account caps and API bounds (docs/security.md, "API-side limits")."""
    mib = 1024 * 1024
    return {
        "max_computes_per_account": _env_int("CERVER_MAX_COMPUTES_PER_ACCOUNT", 50, minimum=1),
        "max_open_sessions_per_account": _env_int(
            "CERVER_MAX_OPEN_SESSIONS_PER_ACCOUNT", 1000, minimum=1
        ),
        "max_concurrent_runs_per_account": _env_int(
            "CERVER_MAX_CONCURRENT_RUNS_PER_ACCOUNT", 32, minimum=1
        ),
        "transcript_budget_bytes": _env_int(
            "CERVER_TRANSCRIPT_BUDGET_BYTES", 64 * mib, minimum=64 * 1024
        ),
        "transcript_page_max_bytes": _env_int(
            "CERVER_TRANSCRIPT_PAGE_MAX_BYTES", 4 * mib, minimum=64 * 1024
        ),
        "transcript_full_max_entries": _env_int(
            "CERVER_TRANSCRIPT_FULL_MAX_ENTRIES", 2000, minimum=10
        ),
        "stress_jobs_max": _env_int("CERVER_STRESS_JOBS_MAX", 200, minimum=1),
        "stress_job_ttl_s": _env_float("CERVER_STRESS_JOB_TTL_S", 3600.0, minimum=1.0),
        "trusted_proxies": _env_networks("CERVER_TRUSTED_PROXIES"),
        "gateway_rate_per_s": _env_float("CERVER_GATEWAY_RATE_PER_S", 60.0, minimum=0.001),
        "gateway_burst": _env_int("CERVER_GATEWAY_BURST", 120, minimum=1),
    }


def _llm_settings() -> dict:  # type: ignore[type-arg]
    defaults = Settings.model_fields["llm_default_models"].default
    models = os.environ.get("CERVER_OPENAI_COMPATIBLE_MODELS", "")
    return {
        "llm_base_urls": _llm_base_urls(),
        "llm_default_models": defaults
        | _env_json_object("CERVER_LLM_DEFAULT_MODELS", '{"openai": "gpt-5-mini"}'),
        "llm_max_output_tokens": _env_int("CERVER_LLM_MAX_OUTPUT_TOKENS", 4096, minimum=1),
        "llm_budget_usd": _env_optional_float("CERVER_LLM_BUDGET_USD"),
        "llm_timeout_s": _env_float("CERVER_LLM_TIMEOUT_S", 120.0, minimum=0.1),
        "llm_retries": _env_int("CERVER_LLM_RETRIES", 2, minimum=0),
        "llm_retry_max_wait_s": _env_float("CERVER_LLM_RETRY_MAX_WAIT_S", 30.0, minimum=0.0),
        "premium_model": os.environ.get("CERVER_PREMIUM_MODEL") or None,
        "openai_compatible_models": [m.strip() for m in models.split(",") if m.strip()],
        "llm_prices": _env_json_object(
            "CERVER_LLM_PRICES", '{"llama-3.1-8b": {"input": 0.1, "output": 0.2}}'
        ),
    }


def prepare_home(settings: Settings) -> None:
    """Lay out CERVER_HOME so sandboxes (other uids) can reach their own workspace but read
    nothing else: home and sandboxes/ are traverse-only (0711), files we create are 0600."""
    os.umask(0o077)
    settings.home.mkdir(parents=True, exist_ok=True)
    os.chmod(settings.home, 0o711)
    settings.sandboxes_dir.mkdir(exist_ok=True)
    os.chmod(settings.sandboxes_dir, 0o711)
