"""Store fixtures: every test that takes ``db_url`` runs once on SQLite and once on PostgreSQL,
each time on a fresh, empty database.

PostgreSQL comes from ``CERVER_TEST_POSTGRES_URL`` when set (a role that may CREATE DATABASE;
the tests make and drop their own databases there), otherwise from a throwaway cluster that
this session starts from the installed binaries (``tests/store/pgcluster.py``). Without
either, the PostgreSQL parameters are skipped, except under CI (``CI=true``), where a missing
PostgreSQL is a failure: CI installs it (``.ci/run``) so that these tests always run there.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from cerver.store import db
from tests.store import pgcluster

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A URL of a PostgreSQL server this session may create databases on."""
    with pgcluster.server_for_tests() as url:
        yield url


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database, dropped after the test."""
    with pgcluster.fresh_database(postgres_server) as url:
        yield url


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database URL, once per backend (nothing created in it yet)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.db'}"
        yield url
        db.dispose(url)
    else:
        yield request.getfixturevalue("postgres_url")


@pytest.fixture
def engine(db_url: str) -> Engine:
    """The store's engine for ``db_url``: migrated, cached per process like in production."""
    return db.engine_for(db_url)
