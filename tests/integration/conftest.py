"""The `capped` app: a second Cerver app with tight caps and a small transcript budget,
deployed on the shared Serve instance under /capped, with its own Ray namespace and store
(so its counts start at zero and the shared server's settings stay as they are)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import httpx
import pytest
import ray

from cerver.config import Settings, prepare_home
from tests.conftest import make_home

PREFIX = "/capped"


@pytest.fixture(scope="session")
def capped_settings(server: str, server_settings: Settings) -> Iterator[Settings]:
    from ray import serve

    from cerver.serve_app.app import application

    home = make_home()
    settings = server_settings.model_copy(
        update={
            "home": home,
            "database_url": f"sqlite:///{home / 'cerver.db'}",
            "ray_namespace": "cerver-test-capped",
            "session_pool_size": 0,
            "sandbox_pool_size": 0,
            "max_computes_per_account": 2,
            "max_open_sessions_per_account": 3,
            "max_concurrent_runs_per_account": 1,
            "transcript_budget_bytes": 64 * 1024,
            "transcript_page_max_bytes": 48 * 1024,
            "transcript_full_max_entries": 15,
            # issue 16 (haproxy): a gateway bucket small enough to empty in a few requests
            # (tests/integration/test_front_door.py)
            "gateway_rate_per_s": 0.5,
            "gateway_burst": 5,
        }
    )
    prepare_home(settings)
    serve.run(application(settings), name="capped", route_prefix=PREFIX)
    yield settings
    serve.delete("capped")
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor["namespace"] == settings.ray_namespace:
            ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]))
    shutil.rmtree(home, ignore_errors=True)


def capped_client(server: str, settings: Settings, name: str) -> httpx.Client:
    """A client of the capped app for a fresh account named ``name``."""
    from cerver.store import Store

    store = Store.open(settings.database_url)
    account = store.accounts.get_or_create(name)
    token = store.accounts.issue_token(account.id)
    return httpx.Client(
        base_url=server + PREFIX, headers={"Authorization": f"Bearer {token}"}, timeout=60
    )
