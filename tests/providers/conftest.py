"""Fixtures for provider tests that need no Ray: a store, settings, the Vercel and
Daytona fakes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cerver.config import Settings
from cerver.store import Store
from tests.fakes.process import start_fake


@pytest.fixture(scope="module")
def vercel_url() -> Iterator[str]:
    with start_fake("vercel", 0, "--reject-key", "rejected-vercel-token") as url:
        yield url


DAYTONA_REJECTED = "rejected-daytona-key"


@pytest.fixture(scope="module")
def daytona_url() -> Iterator[str]:
    with start_fake("daytona", 0, "--reject-key", DAYTONA_REJECTED) as url:
        yield url


@pytest.fixture
def settings(tmp_path: Path, vercel_url: str, daytona_url: str) -> Settings:
    home = tmp_path / "home"
    home.mkdir()
    return Settings(
        home=home,
        database_url=f"sqlite:///{home / 'cerver.db'}",
        vercel_api_url=vercel_url,
        daytona_api_url=daytona_url,
        secret_refs=("TEST_CLOUD_*", "EXACT_NAME"),
    )


@pytest.fixture
def store(settings: Settings) -> Store:
    return Store.open(settings.database_url)
