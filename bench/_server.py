"""Start a real Cerver (Ray + Serve + SQLite) in this process for a benchmark, and measure
the processes it owns. Shared by the bench scripts; not a test fixture."""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cerver.config import Settings, prepare_home
from cerver.serve_app.ingress import apply_ingress_env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_server(
    env: dict[str, str] | None = None, **overrides: Any
) -> Iterator[tuple[str, str, Settings]]:
    """Yields (base_url, token, settings); shuts Ray down on exit. ``env``: variables for
    the ingress replicas (e.g. model keys)."""
    import ray
    from ray import serve

    from cerver.serve_app.app import application
    from cerver.store import Store

    home = Path(tempfile.mkdtemp(prefix="cerver-bench-", dir="/tmp"))
    os.chmod(home, 0o711)
    settings = Settings(
        home=home,
        database_url=f"sqlite:///{home / 'cerver.db'}",
        port=free_port(),
        ray_namespace="cerver-bench",
        **overrides,
    )
    prepare_home(settings)
    apply_ingress_env(settings)  # HAProxy or Serve's proxy: before Ray starts
    store = Store.open(settings.database_url)
    token = store.accounts.issue_token(store.accounts.get_or_create("bench").id)
    ray.init(
        address="local",
        num_cpus=os.cpu_count() or 2,
        include_dashboard=False,
        namespace="cerver-bench",
        log_to_driver=False,
    )
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": settings.port})
        serve.run(application(settings, env=env), name="cerver", route_prefix="/")
        directory = ray.get_actor("cerver-session-directory", namespace="cerver-bench")
        ray.get(directory.warm.remote(), timeout=120)
        yield f"http://127.0.0.1:{settings.port}", token, settings
    finally:
        serve.shutdown()
        ray.shutdown()


def process_tree(root: int | None = None) -> list[tuple[int, str, int]]:
    """(pid, name, rss_bytes) for every live descendant of ``root`` (default: this process)."""
    from _census import descendants

    return [(p.pid, p.name, p.rss) for p in descendants(root)]
