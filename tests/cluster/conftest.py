"""Multi-node fixtures: a ``ray.cluster_utils.Cluster`` of its own (head + two workers with
different resources and labels) and the real Serve app on it with two ingress replicas.

Ray allows one driver connection per process, so these tests run in their own pytest
process (``pytest tests/cluster``), never together with the shared ``ray_runtime`` suite.

The store is SQLite, or PostgreSQL with ``CERVER_TEST_CLUSTER_STORE=postgresql`` (a database
every node reaches, as on a real cluster); ``make test`` runs this suite once with each.

Layout (one machine, so every node shares the disk):

    head      num_cpus=1 (held busy)        Serve controller + the one HTTP proxy, no session hosts
    worker a  num_cpus=1  api=1 sbx=2  zone=a   an ingress replica; sandboxes asking for sbx
    worker b  num_cpus=1  api=1        zone=b   the other ingress replica
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from cerver.config import Settings, prepare_home
from tests.conftest import apply_test_ingress_env, free_port, make_home
from tests.serve_process import descendants
from tests.store import pgcluster

NAMESPACE = "cerver-cluster-test"


def _refuse_shared_ray() -> None:
    if ray.is_initialized():
        raise pytest.UsageError(
            "tests/cluster start their own multi-node Ray cluster, but this pytest process is "
            "already connected to Ray (the shared `ray_runtime` suite). Run them in a separate "
            "process: `pytest --ignore=tests/cluster` then `pytest tests/cluster`."
        )


def pytest_collection_finish(session: pytest.Session) -> None:
    # Collected together with the main suite: fail loudly before anything starts Ray.
    ours = [item for item in session.items if "tests/cluster/" in item.nodeid]
    if ours and len(ours) != len(session.items):
        raise pytest.UsageError(
            "tests/cluster must run in their own pytest process (one Ray driver per process): "
            "`pytest --ignore=tests/cluster` then `pytest tests/cluster`."
        )


@dataclass
class Nodes:
    """The cluster and the worker nodes the tests added (by role)."""

    cluster: Any
    workers: dict[str, Any] = field(default_factory=dict)
    args: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, role: str, **node_args: Any) -> Any:
        node = self.cluster.add_node(num_cpus=1, **node_args)
        self.cluster.wait_for_nodes()
        self.workers[role], self.args[role] = node, node_args
        return node

    def remove(self, role: str) -> None:
        """Kill the node at once (no graceful drain), as a machine loss would: its Ray daemons
        and every process they started. Ray kills the daemons; a worker notices its raylet is
        gone only a moment later, and could still answer a call meanwhile, so we kill the
        workers (and the sandboxes under them) too, as the machine's loss would."""
        node = self.workers.pop(role)
        started = set()
        for infos in node.all_processes.values():
            for info in infos:
                started |= descendants(info.process.pid)
        self.cluster.remove_node(node, allow_graceful=False)
        for pid in started:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self._wait_marked_dead(node.node_id)

    @staticmethod
    def _wait_marked_dead(node_id: str, within_s: float = 90.0) -> None:
        """Until Ray's health checks declare the node dead, the scheduler may still place
        actors on it (they die at once): later tests must not race with that window."""
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            if not any(n["NodeID"] == node_id and n["Alive"] for n in ray.nodes()):
                return
            time.sleep(0.5)
        raise AssertionError(f"Ray still reports node {node_id} alive {within_s}s after its loss")

    def replace(self, role: str) -> Any:
        """Lose the node, then start a fresh one with the same resources and labels."""
        self.remove(role)
        return self.add(role, **self.args[role])

    def role_of(self, node_id: str) -> str | None:
        return next((r for r, n in self.workers.items() if n.node_id == node_id), None)


@ray.remote(num_cpus=1)
class _HeadLoad:
    def ready(self) -> bool:
        return True


@pytest.fixture(scope="session")
def nodes() -> Iterator[Nodes]:
    from ray.cluster_utils import Cluster

    _refuse_shared_ray()
    apply_test_ingress_env()  # every node of this one-machine cluster inherits it
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "include_dashboard": False},
    )
    found = Nodes(cluster)
    found.add("a", resources={"api": 1, "sbx": 2}, labels={"zone": "a"})
    found.add("b", resources={"api": 1}, labels={"zone": "b"})
    ray.init(address=cluster.address, namespace=NAMESPACE, log_to_driver=False)
    # Keep the head's CPU busy, as on a real cluster's head: sandboxes that ask for a CPU
    # then land on the workers. (Zero-CPU session hosts are kept there by their labels.)
    busy = _HeadLoad.options(  # type: ignore[attr-defined]
        scheduling_strategy=NodeAffinitySchedulingStrategy(cluster.head_node.node_id, soft=False)
    ).remote()
    ray.get(busy.ready.remote(), timeout=60)
    try:
        yield found
    finally:
        ray.shutdown()
        cluster.shutdown()


STORES = ("sqlite", "postgresql")


@pytest.fixture(scope="session")
def cluster_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of the store every node of the cluster shares."""
    backend = os.environ.get("CERVER_TEST_CLUSTER_STORE", "sqlite")
    if backend not in STORES:
        raise pytest.UsageError(
            f"CERVER_TEST_CLUSTER_STORE must be one of {STORES}, not {backend!r}"
        )
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('cluster-store') / 'cerver.db'}"
        return
    with pgcluster.server_for_tests() as server, pgcluster.fresh_database(server) as url:
        yield url


@pytest.fixture(scope="session")
def cluster_settings(cluster_database: str) -> Iterator[Settings]:
    home = make_home()
    settings = Settings(
        home=home,
        database_url=cluster_database,
        port=free_port(),
        ray_namespace=NAMESPACE,
        # Session hosts on the workers, as a deployment keeps them off its head: losing
        # their node is what these tests exercise (CERVER_SESSION_HOST_LABELS).
        session_host_labels={"zone": "in(a,b)"},
        output_limit_bytes=64 * 1024,
        run_timeout_s=20.0,
    )
    prepare_home(settings)
    yield settings
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def cluster_server(nodes: Nodes, cluster_settings: Settings) -> Iterator[str]:
    from ray import serve

    from cerver.serve_app.app import Ingress

    # One proxy, on the head: every node of this one-machine cluster shares the address.
    serve.start(
        proxy_location="HeadOnly",
        http_options={"host": "127.0.0.1", "port": cluster_settings.port},
    )
    app = Ingress.options(  # type: ignore[attr-defined]
        num_replicas=2, ray_actor_options={"num_cpus": 0, "resources": {"api": 1}}
    ).bind(cluster_settings)
    serve.run(app, name="cerver", route_prefix="/")
    yield f"http://127.0.0.1:{cluster_settings.port}"
    serve.shutdown()


@pytest.fixture(scope="session")
def cluster_token(cluster_settings: Settings) -> str:
    from cerver.store import Store

    store = Store.open(cluster_settings.database_url)
    account = store.accounts.get_or_create("cluster-alice")
    return str(store.accounts.issue_token(account.id))


@pytest.fixture
def capi(cluster_server: str, cluster_token: str) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=cluster_server, headers={"Authorization": f"Bearer {cluster_token}"}, timeout=90
    ) as client:
        yield client


os.environ.setdefault("RAY_DEDUP_LOGS", "0")
