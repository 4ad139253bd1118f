"""Shared fixtures: one Ray + Serve instance for the whole test session.

Ray starts once (``num_cpus=2``), Serve deploys the real app on a free loopback port with a
fresh CERVER_HOME, and everything is shut down at the end so no process outlives the suite.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cerver.config import Settings, prepare_home
from tests.fakes import e2b as fake_e2b

os.environ.setdefault("RAY_DEDUP_LOGS", "0")
# The e2b tests' account key, as a name in the `env` secrets backend: set before Ray starts
# so the server's actors inherit it (tests/integration/test_e2b_swap.py).
E2B_TEST_KEY_REF = "TEST_CLOUD_E2B_API_KEY"  # allowed by server_settings.secret_refs
os.environ.setdefault(E2B_TEST_KEY_REF, "e2b_test_" + os.urandom(8).hex())
E2B_REVOKED_KEY_REF = "TEST_CLOUD_E2B_REVOKED_KEY"  # one the fake refuses, as E2B would
os.environ.setdefault(E2B_REVOKED_KEY_REF, "e2b_revoked_" + os.urandom(8).hex())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def exited(pid: int, timeout_s: float = 10.0) -> bool:
    """Wait until ``pid`` has exited (gone, or a zombie its parent has yet to reap)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


def make_home() -> Path:
    # Not under pytest's 0700 tmp dirs: sandbox uids must be able to traverse to their
    # workspace (everything else stays unreadable to them).
    home = Path(tempfile.mkdtemp(prefix="cerver-test-", dir="/tmp"))
    os.chmod(home, 0o711)
    return home


def apply_test_ingress_env() -> None:
    """The Serve front door the server fixtures use: HAProxy, as the server's default,
    Serve's proxy with CERVER_SERVE_HAPROXY=0 (set before Ray starts; ingress.py)."""
    from cerver.serve_app.ingress import ingress_env

    haproxy = os.environ.get("CERVER_SERVE_HAPROXY", "1").strip().lower() not in (
        "0",
        "false",
        "no",
        "off",
    )
    os.environ.update(ingress_env(haproxy, make_home()))


@pytest.fixture(scope="session")
def ray_runtime() -> Iterator[None]:
    import ray

    apply_test_ingress_env()
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        namespace="cerver-test",
        log_to_driver=False,
    )
    yield
    ray.shutdown()


# --- fake model APIs (tests/fakes/openai.py, anthropic.py) for run-llm ------------------
# The Serve replicas are other processes: the fakes' base URLs reach them in the Settings,
# the fake keys in the replicas' environment (runtime_env), where the `env` secrets
# backend resolves OPENAI_API_KEY / ANTHROPIC_API_KEY by name, as in production.
FAKE_LLM_KEYS = {"OPENAI_API_KEY": "sk-test-openai-key", "ANTHROPIC_API_KEY": "sk-ant-test-key"}
# --- issue 11 (cloud): the server talks to provider fakes on ports reserved up front ---
VERCEL_FAKE_PORT = free_port()


@pytest.fixture(scope="session")
def vercel_fake() -> Iterator[str]:
    """The Vercel fake (tests/fakes/vercel.py) as a subprocess, on the port the shared
    server's ``vercel_api_url`` names; it refuses the key ``rejected-vercel-token``."""
    from tests.fakes.process import start_fake

    with start_fake("vercel", VERCEL_FAKE_PORT, "--reject-key", "rejected-vercel-token") as url:
        yield url


DAYTONA_FAKE_PORT = free_port()


@pytest.fixture(scope="session")
def daytona_fake() -> Iterator[str]:
    """The Daytona fake (tests/fakes/daytona.py): its API URL is the shared server's
    ``daytona_api_url``; it refuses the key ``rejected-daytona-key``."""
    from tests.fakes.process import start_fake

    with start_fake("daytona", DAYTONA_FAKE_PORT, "--reject-key", "rejected-daytona-key") as url:
        yield url


@pytest.fixture(scope="session")
def e2b_fake() -> Iterator[fake_e2b.FakeProcess]:
    """The fake E2B (tests/fakes/e2b.py) the shared server's `e2b` provider talks to."""
    with fake_e2b.running("--reject-key", os.environ[E2B_REVOKED_KEY_REF]) as fake:
        yield fake


@pytest.fixture(scope="session")
def llm_fakes() -> Iterator[dict]:  # type: ignore[type-arg]
    from tests.fakes.llm_process import FakeServer

    fakes = {
        "openai": FakeServer("tests.fakes.openai", free_port()),
        "anthropic": FakeServer("tests.fakes.anthropic", free_port()),
    }
    yield fakes
    for fake in fakes.values():
        fake.stop()


@pytest.fixture(scope="session")
def server_settings(
    e2b_fake: fake_e2b.FakeProcess,
    llm_fakes: dict,  # type: ignore[type-arg]
) -> Settings:
    home = make_home()
    settings = Settings(
        home=home,
        database_url=f"sqlite:///{home / 'cerver.db'}",
        port=free_port(),
        ray_namespace="cerver-test",
        max_body_bytes=256 * 1024,
        output_limit_bytes=64 * 1024,
        run_timeout_s=20.0,
        max_run_timeout_s=120.0,
        # Small enough that tests/integration/test_hibernation.py can reach it.
        max_live_sessions_per_account=6,
        e2b_api_url=e2b_fake.url,
        e2b_sandbox_url=e2b_fake.env["CERVER_E2B_SANDBOX_URL"],
        # run-llm against the fake model APIs (keys: FAKE_LLM_KEYS, in the replicas' env).
        llm_base_urls={
            "openai": f"{llm_fakes['openai'].url}/v1",
            "anthropic": llm_fakes["anthropic"].url,
            "openai-compatible": f"{llm_fakes['openai'].url}/v1",
        },
        openai_compatible_models=["llama-3.1-8b"],
        llm_prices={"llama-3.1-8b": {"input": 0.1, "output": 0.2}},
        llm_timeout_s=5.0,
        llm_retry_max_wait_s=2.0,
        vercel_api_url=f"http://127.0.0.1:{VERCEL_FAKE_PORT}",  # issue 11: `vercel_fake`
        daytona_api_url=f"http://127.0.0.1:{DAYTONA_FAKE_PORT}/api",  # issue 11: `daytona_fake`
        secret_refs=("TEST_CLOUD_*",),  # issue 11: names credential references may use
        # issue 10 (cgroups): per-sandbox bounds small enough for the resource probes to
        # pass them (tests/security/test_resource_probes.py); pids below RLIMIT_NPROC (128)
        sandbox_pids_max=100,
        sandbox_total_memory_mb=1024,
        sandbox_disk_mb=256,
        sandbox_disk_files=12_000,
    )
    prepare_home(settings)
    return settings


@pytest.fixture(scope="session")
def server(ray_runtime: None, server_settings: Settings) -> Iterator[str]:
    from ray import serve

    from cerver.serve_app.app import application

    serve.start(http_options={"host": "127.0.0.1", "port": server_settings.port})
    serve.run(application(server_settings, env=FAKE_LLM_KEYS), name="cerver", route_prefix="/")
    yield f"http://127.0.0.1:{server_settings.port}"
    serve.shutdown()


@pytest.fixture(scope="session")
def store(server_settings: Settings):  # type: ignore[no-untyped-def]
    from cerver.store import Store

    return Store.open(server_settings.database_url)


def _token(store, name: str) -> str:  # type: ignore[no-untyped-def]
    account = store.accounts.get_or_create(name)
    return str(store.accounts.issue_token(account.id))


@pytest.fixture(scope="session")
def token(store) -> str:  # type: ignore[no-untyped-def]
    return _token(store, "alice")


@pytest.fixture(scope="session")
def other_token(store) -> str:  # type: ignore[no-untyped-def]
    return _token(store, "mallory")


@pytest.fixture
def api(server: str, token: str) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=server, headers={"Authorization": f"Bearer {token}"}, timeout=60
    ) as client:
        yield client


@pytest.fixture
def other_api(server: str, other_token: str) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=server, headers={"Authorization": f"Bearer {other_token}"}, timeout=60
    ) as client:
        yield client


@pytest.fixture(scope="session")
def crowd_token(store) -> str:  # type: ignore[no-untyped-def]
    return _token(store, "crowd")


@pytest.fixture
def anon(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=60) as client:
        yield client
