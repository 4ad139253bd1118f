"""Dashboard fixtures: an account of its own on the shared server, and a signed-in client."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import _token


@pytest.fixture(scope="session")
def dash_token(store) -> str:  # type: ignore[no-untyped-def]
    return _token(store, "dashboard-owner")


@pytest.fixture
def dash_api(server: str, dash_token: str) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=server, headers={"Authorization": f"Bearer {dash_token}"}, timeout=60
    ) as client:
        yield client


def sign_in(client: httpx.Client, token: str) -> httpx.Response:
    return client.post("/dashboard/login", data={"token": token})


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "page has no CSRF field"
    return found.group(1)


@pytest.fixture
def browser_client(server: str, dash_token: str) -> Iterator[httpx.Client]:
    """A cookie-keeping client signed in to the dashboard (no bearer header)."""
    with httpx.Client(base_url=server, timeout=60) as client:
        assert sign_in(client, dash_token).status_code == 303
        yield client
